from textgen.cli.app import main

main()
