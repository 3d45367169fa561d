// Entry point of the `sparkv` command-line tool; the commands live in the other files.
SparKVCommand.main()
