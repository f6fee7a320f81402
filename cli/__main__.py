"""`python -m cli …` is `agentrun …`."""

from cli.main import main

main()
