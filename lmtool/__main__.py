from lmtool.cli.main import main

main()
