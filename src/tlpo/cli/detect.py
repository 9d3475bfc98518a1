"""`tlpo detect`: placeholder until the command is written."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="(not yet available)")
    parser.set_defaults(func=lambda args: 0)
