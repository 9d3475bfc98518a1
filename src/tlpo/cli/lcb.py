"""`tlpo lcb`: placeholder until the command is written."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("lcb", help="(not yet available)")
    parser.set_defaults(func=lambda args: 0)
