"""Exit codes of the client commands, the contract with shell scripts (`lrsearch --help` lists
them)."""

EXIT_OK = 0
EXIT_STUDY_FAILED = 1  # the study ended failed or cancelled
EXIT_USAGE = 2  # bad arguments or an unreadable local file (argparse uses 2 as well)
EXIT_API = 3  # the API refused the request (problem title/detail on stderr)
EXIT_CONNECT = 4  # the API could not be reached
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`| head -1`): as a shell reports SIGPIPE
