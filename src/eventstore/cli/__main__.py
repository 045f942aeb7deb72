"""`python -m eventstore.cli`, the same as the `eventstore` command."""

from eventstore.cli import main

if __name__ == "__main__":
    main()
