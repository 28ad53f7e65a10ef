/dev/fd/3: line 60: --start: command not found
