"""Write corpora/demo/: the embedded default corpus, English prose generated from our own
templates, phrase banks and a small grammar (no text is taken from anywhere else).

Deterministic: the same seed writes the same bytes, so the committed output can be
checked against a fresh run (tests/test_corpora.py). Standard library only.

    python corpora/make_demo.py                  # rewrites corpora/demo/
    python corpora/make_demo.py --out /tmp/demo  # somewhere else
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
from pathlib import Path

SEED = 1234

# --- The cast: a village by the sea, its people and their things. -------------------------

PEOPLE = [
    ("Anna", "she", "her", "her", "the baker"),
    ("Tom", "he", "him", "his", "the fisherman"),
    ("Maria", "she", "her", "her", "the teacher"),
    ("Peter", "he", "him", "his", "the carpenter"),
    ("Lucy", "she", "her", "her", "the doctor"),
    ("Sam", "he", "him", "his", "the postman"),
    ("Grace", "she", "her", "her", "the gardener"),
    ("Oliver", "he", "him", "his", "the shopkeeper"),
    ("Nora", "she", "her", "her", "the librarian"),
    ("Jack", "he", "him", "his", "the blacksmith"),
    ("Ella", "she", "her", "her", "the painter"),
    ("Henry", "he", "him", "his", "the miller"),
    ("Rosa", "she", "her", "her", "the innkeeper"),
    ("Leo", "he", "him", "his", "the farmer"),
    ("Clara", "she", "her", "her", "the sailor"),
    ("Max", "he", "him", "his", "the clockmaker"),
]

BANKS: dict[str, list[str]] = {
    "place": [
        "the harbour",
        "the old mill",
        "the market square",
        "the library",
        "the bakery",
        "the hill behind the village",
        "the river bank",
        "the lighthouse",
        "the school",
        "the station",
        "the orchard",
        "the bridge",
        "the beach",
        "the forest path",
        "the town hall",
        "the little church",
        "the garden",
        "the inn",
    ],
    "thing": [
        "a lantern",
        "an old map",
        "a wooden box",
        "a blue umbrella",
        "a letter",
        "a silver key",
        "a basket of apples",
        "a small boat",
        "a broken clock",
        "a red kite",
        "a loaf of bread",
        "a warm coat",
        "a book of songs",
        "a jar of honey",
        "a pair of boots",
        "a fishing net",
        "a bunch of flowers",
        "a tin of paint",
    ],
    "animal": [
        "cat",
        "dog",
        "fox",
        "owl",
        "goat",
        "crow",
        "rabbit",
        "horse",
        "mouse",
        "duck",
        "hen",
        "hedgehog",
        "donkey",
        "sparrow",
        "tortoise",
        "bear",
        "wolf",
        "frog",
    ],
    "time": [
        "early in the morning",
        "at noon",
        "in the afternoon",
        "just before sunset",
        "late in the evening",
        "after breakfast",
        "on a grey Monday",
        "on a warm Saturday",
        "one windy night",
        "at the end of the summer",
        "in the first week of spring",
        "on a cold winter day",
    ],
    "weather": [
        "it was raining softly",
        "the sun was shining",
        "a cold wind was blowing",
        "the sky was grey and heavy",
        "fog lay over the water",
        "snow had fallen in the night",
        "the air was warm and still",
        "thunder rolled far away",
        "the clouds were low",
    ],
    "feeling": [
        "happy",
        "tired",
        "curious",
        "worried",
        "proud",
        "nervous",
        "calm",
        "cheerful",
        "lonely",
        "surprised",
        "hopeful",
        "grateful",
        "restless",
        "sleepy",
    ],
    "adj": [
        "quiet",
        "busy",
        "old",
        "narrow",
        "bright",
        "dark",
        "small",
        "crowded",
        "peaceful",
        "cold",
        "warm",
        "empty",
        "noisy",
        "friendly",
    ],
    "verb_past": [
        "walked to",
        "hurried to",
        "went back to",
        "wandered to",
        "ran to",
        "cycled to",
        "drove to",
        "climbed up to",
        "strolled down to",
    ],
    "task": [
        "mend the fence",
        "bake a cake",
        "paint the door",
        "clean the windows",
        "plant some beans",
        "fix the roof",
        "write a long letter",
        "sort the old books",
        "wash the boat",
        "carry the firewood",
        "feed the chickens",
        "tidy the shed",
    ],
    "food": [
        "soup",
        "bread and cheese",
        "apple pie",
        "fresh fish",
        "hot tea",
        "porridge",
        "a bowl of stew",
        "boiled eggs",
        "plum jam",
        "roast potatoes",
        "warm milk",
    ],
    "sound": [
        "the bell of the church",
        "a dog barking",
        "the waves on the rocks",
        "a door closing",
        "children laughing",
        "the wind in the trees",
        "a train in the distance",
        "rain on the roof",
    ],
    "says": ["said", "replied", "whispered", "called", "answered", "laughed"],
    "asks": ["asked", "said", "called", "whispered", "wondered"],
    "glad": ["happy", "cheerful", "proud", "grateful", "relieved", "glad", "content"],
    "building": [
        "the inn",
        "the bakery",
        "the old mill",
        "the station",
        "the little church",
        "the school",
        "the library",
        "the barn",
        "the boat shed",
    ],
    "color": ["red", "green", "yellow", "blue", "white", "brown", "grey"],
    "good_thing": [
        "the bread was still warm",
        "the boat was safe",
        "the garden was full of flowers",
        "the letter had finally arrived",
        "the roof no longer leaked",
        "the children were home",
        "the harvest was good",
        "the storm had passed",
    ],
}

# --- The grammar: fill {slots} in templates. Slots in the context are fixed for a
# document (the characters, the place); other slots are drawn from BANKS each time. ---------

SLOT = re.compile(r"\{(\w+)\}")
AN = re.compile(r"\b([Aa]) ([aeio])")
SENTENCE_START = re.compile(r'((?:^|[.!?] )"?)([a-z])')  # also inside a new quote


class Writer:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()  # templates used in the current document

    def pick(self, items):
        return items[self.rng.randrange(len(items))]

    def fill(self, template: str, ctx: dict[str, str]) -> str:
        def sub(m: re.Match) -> str:
            key = m.group(1)
            return ctx[key] if key in ctx else self.pick(BANKS[key])

        text = SLOT.sub(sub, template)
        text = AN.sub(lambda m: m.group(1) + "n " + m.group(2), text)  # "a old" -> "an old"
        text = SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
        return text[0].upper() + text[1:]

    def sentences(self, templates: list[str], ctx: dict[str, str], n: int) -> str:
        """n templates not yet used in this document, so a story does not repeat itself."""
        fresh = [t for t in templates if t not in self.used] or templates
        chosen = self.rng.sample(fresh, min(n, len(fresh)))
        self.used.update(chosen)
        return " ".join(self.fill(t, ctx) for t in chosen)

    def cast(self, n: int) -> dict[str, str]:
        """Start a document: choose n distinct people and name them A, B, ... in the context."""
        self.used = set()
        ctx: dict[str, str] = {}
        for letter, (name, he, him, his, job) in zip(
            "ABC", self.rng.sample(PEOPLE, n), strict=False
        ):
            ctx.update(
                {
                    letter: name,
                    f"{letter}he": he,
                    f"{letter}him": him,
                    f"{letter}his": his,
                    f"{letter}job": job,
                }
            )
        ctx["home"] = self.pick(BANKS["place"])
        return ctx


# --- Stories -----------------------------------------------------------------------------

STORY_OPEN = [
    "{A} was {Ajob} in a small village by the sea.",
    "Everyone in the village knew {A}, {Ajob}.",
    "{A} woke up before the birds, as {Ahe} always did.",
    "{A} had lived near {home} for many years.",
    "There was once a {adj} village, and in it lived {A}, {Ajob}.",
    "When {weather}, {A} liked to sit by the window and think.",
]
STORY_SETTING = [
    "That morning {weather}.",
    "{Ahe} made a cup of tea and looked out at {place}.",
    "{Ahe} felt {feeling}, but {Ahe} could not say why.",
    "Outside, {Ahe} could hear {sound}.",
    "The streets were {adj} and the shops had just opened.",
    "{Ahe} had promised to {task} before the end of the week.",
    "On the table lay {thing} that {Ahe} had found the day before.",
]
STORY_EVENT = [
    "{A} {verb_past} {place}, where {Ahe} met {B}, {Bjob}.",
    "On the way to {place}, {A} saw {B} carrying {thing}.",
    "{B} knocked at the door and asked {A} for help.",
    "At {place}, {A} found {thing} lying on the ground.",
    "{time}, {B} came running down the road with a worried face.",
    "{A} and {B} decided to {task} together.",
    "A {animal} followed {A} all the way to {place}.",
]
STORY_MIDDLE = [
    "They talked for a long time about the weather and the harvest.",
    "{B} explained that {Bhe} had lost {thing} near {place}.",
    "{A} listened carefully and then nodded.",
    "The two of them searched every corner, but they found nothing at first.",
    "{Ahe} remembered that {Ahis} grandmother used to tell a story about {place}.",
    "It took them most of the afternoon, and they were {feeling} by the end.",
    "A little later {C}, {Cjob}, joined them and offered to help.",
    "{C} brought {food}, and they stopped to eat.",
    "They laughed when the {animal} tried to steal the bread.",
    "{B} was {feeling}, so {A} told {Bhim} not to give up.",
    "The path was {adj}, and they had to walk slowly.",
    "When {weather}, they took shelter under the roof of {building}.",
    "{A} pointed at a {color} door and said that it had not been there before.",
    "Nobody had been to {place} since the old miller died.",
    "{B} was sure that the answer was hidden somewhere near {place}.",
    "They asked everyone they met, but nobody had seen {thing}.",
    "For a while they sat on a bench and shared {food}.",
    "The {animal} sat on the wall and watched them with bright eyes.",
    "{A} wrote everything down in a little notebook, so that {Ahe} would not forget.",
    "It was getting late, and the lamps in the village were being lit.",
    "{C} said that {Che} had heard {sound} the night before.",
    "At first {B} did not want to go, but {A} would not listen.",
    "The road to {place} was longer than they remembered.",
    "{A} knew that {Ahe} had to {task} soon, but this seemed more important.",
    "A boy from the school ran past and shouted something they could not hear.",
    "They stopped at {building} to ask for directions.",
    "{B} told {A} about the summer when {Bhe} was a child.",
]
STORY_TURN = [
    "Suddenly {A} noticed something strange behind {place}.",
    "Then {B} gave a shout: {Bhe} had found it at last.",
    "Just as they were about to go home, they heard {sound}.",
    "In the end it was the {animal} that showed them the way.",
    "At that moment {C} remembered where {Che} had seen {thing}.",
]
STORY_END = [
    "By the evening {good_thing}, and everyone was {glad}.",
    "{A} walked home slowly, thinking about the long day.",
    "{B} thanked {A} and promised to bake {Ahim} a cake.",
    "That night {A} slept well, and {Ahe} dreamed of {place}.",
    "From then on, {A} and {B} met at {place} every week.",
    "Years later, people in the village still told the story of that day.",
]


def story(w: Writer) -> str:
    ctx = w.cast(3)
    paras = [
        w.sentences(STORY_OPEN, ctx, 1) + " " + w.sentences(STORY_SETTING, ctx, 3),
        w.sentences(STORY_EVENT, ctx, 2) + " " + w.sentences(STORY_MIDDLE, ctx, 3),
    ]
    for _ in range(w.rng.randint(1, 3)):
        paras.append(w.sentences(STORY_MIDDLE, ctx, w.rng.randint(3, 5)))
    paras.append(w.sentences(STORY_TURN, ctx, 1) + " " + w.sentences(STORY_MIDDLE, ctx, 2))
    paras.append(w.sentences(STORY_END, ctx, 2))
    title = f"{ctx['A']} and the {w.pick(['Lost', 'Old', 'Strange', 'Little', 'Red'])} " + (
        w.pick(["Key", "Boat", "Map", "Lantern", "Letter", "Clock", "Kite", "Box"])
    )
    return title + "\n\n" + "\n\n".join(paras)


# --- Dialogues ---------------------------------------------------------------------------

DIALOGUE_LINES = [
    (
        '"Good morning, {B}," {asks} {A}. "Did you sleep well?"',
        '"Not really," {says} {B}. "{weather} all night, and I kept waking up."',
    ),
    (
        '"Have you seen {thing}?" {asks} {A}. "I left it near {place}."',
        '"I think {C} took it," {says} {B}. "{Che} wanted to show it to the children."',
    ),
    (
        '"Would you like some {food}?" {asks} {A}.',
        '"Yes, please," {says} {B}. "I have not eaten since breakfast."',
    ),
    (
        '"What are you doing today?" {asks} {B}.',
        '"I have to {task}," {says} {A}. "After that I will go to {place}."',
    ),
    (
        '"Is it far to {place}?" {asks} {B}.',
        '"No, it is just over the bridge," {says} {A}. "You can walk there in ten minutes."',
    ),
    (
        '"Why do you look so {feeling}?" {asks} {A}.',
        '"I heard {sound} in the night," {says} {B}, "and I could not sleep again."',
    ),
    (
        '"Can you help me {task}?" {asks} {B}.',
        '"Of course," {says} {A}. "Let me finish my tea first."',
    ),
    (
        '"The market is very {adj} today," {says} {A}.',
        '"It always is on Saturdays," {says} {B}. "Everyone comes to buy fresh fish."',
    ),
    (
        '"Do you think it will rain?" {asks} {B}.',
        '"The sky looks heavy," {says} {A}. "Take {thing}, just in case."',
    ),
    (
        '"Thank you for yesterday," {says} {B}.',
        '"It was nothing," {says} {A}. "You would have done the same for me."',
    ),
    (
        '"Where is the {animal}?" {asks} {A}.',
        '"It ran off towards {place}," {says} {B}. "I will look for it later."',
    ),
]
DIALOGUE_CLOSE = [
    "Then they said goodbye, and {A} went back to {home}.",
    "They sat in silence for a while and watched the boats.",
    "{B} smiled, picked up {Bhis} bag and walked away.",
    "After that they talked about other things until it grew dark.",
]


def dialogue(w: Writer) -> str:
    ctx = w.cast(3)
    intro = w.fill("{time}, {A} met {B} at {place}.", ctx)
    paras = [intro]
    for a, b in w.rng.sample(DIALOGUE_LINES, w.rng.randint(4, 7)):
        paras.append(w.fill(a, ctx))
        paras.append(w.fill(b, ctx))
    paras.append(w.sentences(DIALOGUE_CLOSE, ctx, 1))
    return "\n\n".join(paras)


# --- Letters -----------------------------------------------------------------------------

LETTER_NEWS = [
    "Here in the village {weather} for most of the week.",
    "I finally found the time to {task}, and it looks much better now.",
    "{C} sends {Chis} best wishes and asks when you will visit.",
    "The {animal} has been coming to the garden every morning.",
    "Last Sunday we walked to {place} and had {food} on the way back.",
    "The school children are preparing a play for the end of the summer.",
    "I have been reading a book about ships, and I think you would like it.",
    "The market was {adj} on Saturday, and the price of apples went up again.",
    "I was {feeling} to hear your news, and I hope everything goes well.",
    "My knee is better, although I still cannot walk very far.",
]
LETTER_ASK = [
    "Please write soon and tell me how you are.",
    "Could you send me the recipe for {food}?",
    "If you come in the spring, we could go to {place} together.",
    "Do you still have {thing}? I would like to borrow it.",
    "Give my regards to everyone at home.",
]


def letter(w: Writer) -> str:
    ctx = w.cast(3)
    opening = w.pick(["Dear", "My dear", "Dearest"]) + f" {ctx['B']},"
    body = [
        w.fill(
            w.pick(
                [
                    "Thank you for your letter, which arrived {time}.",
                    "I am sorry I have not written for so long.",
                    "I hope this letter finds you well.",
                ]
            ),
            ctx,
        )
        + " "
        + w.sentences(LETTER_NEWS, ctx, 2),
        w.sentences(LETTER_NEWS, ctx, w.rng.randint(2, 4)),
        w.sentences(LETTER_ASK, ctx, 2),
    ]
    closing = w.pick(["With love,", "Your friend,", "Best wishes,", "Yours truly,"])
    return "\n\n".join([opening, *body, f"{closing}\n{ctx['A']}"])


# --- Weather and market reports ----------------------------------------------------------

REGIONS = ["the coast", "the hills", "the valley", "the north", "the south", "the islands"]
SKY = [
    "sunny spells",
    "light rain",
    "heavy showers",
    "thick fog",
    "clear skies",
    "scattered clouds",
    "strong winds",
    "a few flakes of snow",
    "thunderstorms",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def weather(w: Writer) -> str:
    day = w.pick(DAYS)
    paras = [f"Weather report for {day}"]
    for region in w.rng.sample(REGIONS, w.rng.randint(3, 5)):
        lo = w.rng.randint(-3, 14)
        hi = lo + w.rng.randint(2, 9)
        wind = w.rng.randint(5, 60)
        sky1, sky2 = w.rng.sample(SKY, 2)
        paras.append(
            f"In {region} the day will begin with {sky1}, turning to {sky2} later. "
            f"Temperatures will range from {lo} to {hi} degrees, with winds of about "
            f"{wind} kilometres an hour. "
            + w.pick(
                [
                    "Fishermen should take care near the rocks.",
                    "It will be a good day for walking.",
                    "Drivers are asked to slow down on the hill roads.",
                    "Farmers may want to bring the animals inside tonight.",
                    "The evening will be calm and dry.",
                ]
            )
        )
    paras.append(
        w.pick(
            [
                "Looking ahead, the rest of the week will be milder, with rain at times.",
                "Tomorrow looks brighter, although a cold wind will blow from the sea.",
                "The weekend should be dry and sunny almost everywhere.",
                "More rain is expected later in the week, so keep an umbrella close.",
            ]
        )
    )
    return "\n\n".join(paras)


GOODS = [
    "apples",
    "potatoes",
    "fresh fish",
    "bread",
    "eggs",
    "cheese",
    "honey",
    "wool",
    "firewood",
    "carrots",
    "milk",
    "plums",
    "onions",
    "flour",
]


def market(w: Writer) -> str:
    paras = [f"Market report, {w.pick(DAYS)}"]
    for good in w.rng.sample(GOODS, w.rng.randint(4, 6)):
        change = w.rng.randint(1, 30)
        up = w.rng.random() < 0.5
        reason = w.pick(
            [
                "because of the dry weather",
                "after a good harvest",
                "as the boats stayed in port",
                "because fewer traders came from the city",
                "as demand grew before the holiday",
                "after the heavy rain last week",
            ]
        )
        paras.append(
            f"The price of {good} {'rose' if up else 'fell'} by {change} per cent {reason}. "
            + w.pick(
                [
                    "Traders expect prices to stay the same next week.",
                    "Several stalls had sold out before noon.",
                    "Buyers were careful and bought only small amounts.",
                    "The best quality was found at the stalls near the fountain.",
                ]
            )
        )
    paras.append(
        w.pick(
            [
                "The market opens again on Saturday at seven o'clock.",
                "Next week the market will close early because of the festival.",
                "New traders are welcome and can ask for a stall at the town hall.",
            ]
        )
    )
    return "\n\n".join(paras)


# --- How-to instructions -----------------------------------------------------------------

HOWTO = {
    "bake a simple loaf of bread": [
        "Mix the flour, the salt and the yeast in a large bowl.",
        "Add warm water slowly and stir until the dough comes together.",
        "Knead the dough on the table for ten minutes, until it is smooth.",
        "Cover the bowl with a cloth and leave it somewhere warm for an hour.",
        "Shape the loaf, put it on a tray and let it rise again.",
        "Bake it in a hot oven for about forty minutes.",
        "Let the bread cool before you cut it.",
    ],
    "mend a fence": [
        "Walk along the fence and mark every loose or broken board.",
        "Pull out the old nails with a hammer.",
        "Cut a new board to the right length.",
        "Hold the board in place and nail it to the posts.",
        "Check that the fence stands straight.",
        "Paint the new wood so that the rain does not spoil it.",
    ],
    "plant beans in the garden": [
        "Choose a sunny place with good soil.",
        "Dig the ground and remove the stones and weeds.",
        "Push each bean into the soil, about as deep as your finger.",
        "Leave a hand's width between the beans.",
        "Water them well, but do not drown them.",
        "Put in tall sticks so the plants can climb.",
    ],
    "make a cup of tea": [
        "Fill the kettle with fresh water and bring it to the boil.",
        "Warm the pot with a little hot water, then pour it away.",
        "Put in one spoon of tea for each person.",
        "Pour the boiling water over the leaves.",
        "Wait three or four minutes.",
        "Pour the tea into cups and add milk if you like.",
    ],
    "clean a fishing net": [
        "Spread the net out on the grass.",
        "Pick out the weed and the small shells by hand.",
        "Wash the net with fresh water.",
        "Look for holes and tie them up with strong thread.",
        "Hang the net in the shade to dry.",
    ],
    "fly a kite": [
        "Wait for a day with a steady wind.",
        "Go to an open field, far from trees and wires.",
        "Stand with your back to the wind.",
        "Let a friend hold the kite a few steps away.",
        "When the wind lifts it, let out the string slowly.",
        "Pull gently on the string to keep the kite high.",
    ],
    "paint a door": [
        "Take the handle off the door.",
        "Wash the door and let it dry.",
        "Rub the old paint with sandpaper until it is smooth.",
        "Paint the edges first, then the large flat parts.",
        "Let the first coat dry overnight.",
        "Add a second coat the next morning.",
    ],
}
HOWTO_TIPS = [
    "Take your time, because hurrying only makes more work.",
    "If you are not sure, ask a neighbour who has done it before.",
    "It is easier with two people.",
    "Keep your tools clean and put them back where they belong.",
    "Do not worry if it goes wrong the first time.",
    "Morning is the best time for this job.",
]


def howto(w: Writer) -> str:
    title = w.pick(list(HOWTO))
    steps = HOWTO[title]
    words = ["First", "Next", "Then", "After that", "Now", "Then", "Finally"]
    lines = []
    for i, step in enumerate(steps):
        lead = words[min(i, len(words) - 2)] if i < len(steps) - 1 else words[-1]
        lines.append(f"{lead}, {step[0].lower()}{step[1:]}")
    paras = [f"How to {title}"]
    paras.append(
        w.pick(
            [
                f"Many people ask how to {title}. It is not hard if you follow these steps.",
                f"Here is a simple way to {title}. "
                "You need a little patience and a free afternoon.",
                f"My grandmother taught me how to {title}, and this is how she did it.",
            ]
        )
    )
    cut = len(lines) // 2
    paras.append(" ".join(lines[:cut]))
    paras.append(" ".join(lines[cut:]))
    paras.append(" ".join(w.rng.sample(HOWTO_TIPS, 2)))
    return "\n\n".join(paras)


# --- Fables ------------------------------------------------------------------------------

FABLE_TRAIT = [
    ("proud", "humble"),
    ("greedy", "generous"),
    ("lazy", "hard-working"),
    ("impatient", "patient"),
    ("boastful", "quiet"),
    ("careless", "careful"),
]
FABLE_GOAL = [
    "find food for the winter",
    "cross the river",
    "reach the top of the hill",
    "build a new home",
    "win the race to the old oak tree",
    "find the hidden spring",
]
MORALS = [
    "Slow and steady work is worth more than quick words.",
    "Those who share will never be alone.",
    "Pride is a poor guide on a long road.",
    "A friend in need is worth more than a bag of gold.",
    "Think before you leap, and look before you speak.",
    "Small hands can carry great things when they work together.",
]


def fable(w: Writer) -> str:
    a1, a2 = w.rng.sample(BANKS["animal"], 2)
    bad, good = w.pick(FABLE_TRAIT)
    goal = w.pick(FABLE_GOAL)
    paras = [
        f"The {a1.capitalize()} and the {a2.capitalize()}",
        f"Once there was a {bad} {a1} and a {good} {a2} who lived near {w.pick(BANKS['place'])}. "
        f"One day both of them wanted to {goal}.",
        f'"I will be first," said the {a1}. "Nobody is as clever as I am." '
        f"The {a2} said nothing and began to get ready.",
        f"The {a1} spent the morning talking to everyone it met, and then it fell asleep in "
        f"the sun. Meanwhile the {a2} kept going, step by step, "
        f"even when {w.pick(BANKS['weather'])}.",
        f"When the {a1} woke up, the {a2} had already managed to {goal}. The {a1} was "
        f"{w.pick(['ashamed', 'angry', 'surprised', 'sad'])}, and the other animals laughed.",
        f"Moral: {w.pick(MORALS)}",
    ]
    return "\n\n".join(paras)


# --- Diary entries -----------------------------------------------------------------------

DIARY = [
    "Today I woke up {time} and {weather}.",
    "I had {food} for breakfast and then went to {place}.",
    "{B} came by in the afternoon, and we talked about {place}.",
    "I meant to {task}, but I only did half of it.",
    "I heard {sound} while I was reading.",
    "I feel {feeling} tonight, and I do not quite know why.",
    "Tomorrow I will try to {task} before lunch.",
    "The {animal} was in the garden again, looking for something to eat.",
    "I found {thing} in the cupboard and remembered my father.",
    "In the evening I walked along {place} and watched the light fade.",
    "{C} told me that {good_thing}, which made me glad.",
    "I wrote a letter to {B} but did not send it yet.",
]


def diary(w: Writer, day: int) -> str:
    ctx = w.cast(3)
    paras = [f"{w.pick(DAYS)}, day {day}"]
    for _ in range(w.rng.randint(2, 4)):
        paras.append(w.sentences(DIARY, ctx, w.rng.randint(3, 5)))
    return "\n\n".join(paras)


# --- Writing the corpus ------------------------------------------------------------------

KINDS = [  # (folder, how many documents, maker)
    ("stories", 220, lambda w, i: story(w)),
    ("dialogues", 80, lambda w, i: dialogue(w)),
    ("letters", 80, lambda w, i: letter(w)),
    ("weather", 30, lambda w, i: weather(w)),
    ("market", 30, lambda w, i: market(w)),
    ("howto", 40, lambda w, i: howto(w)),
    ("fables", 70, lambda w, i: fable(w)),
    ("diary", 90, lambda w, i: diary(w, i + 1)),
]


def write_demo(out: Path, seed: int = SEED) -> int:
    """Write every document under `out`; return the total number of bytes written."""
    if out.exists():
        shutil.rmtree(out)
    total = 0
    for k, (folder, count, make) in enumerate(KINDS):
        rng = random.Random(seed * 100 + k)  # one stream per kind: adding a kind moves no other
        w = Writer(rng)
        (out / folder).mkdir(parents=True)
        for i in range(count):
            text = make(w, i).strip() + "\n"
            data = text.encode("utf-8")
            (out / folder / f"{folder}-{i + 1:03d}.txt").write_bytes(data)
            total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "demo")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    total = write_demo(args.out, args.seed)
    print(f"wrote {total:,} bytes to {args.out}")


if __name__ == "__main__":
    main()
