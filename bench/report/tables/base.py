"""What every table shares: how it says that the rows it was given hold nothing it can show."""


class NoRows(ValueError):
    """The rows hold none of the kind this table reads (the CLI says so in one line and exits 2)."""


def lines_text(lines: list[str]) -> str:
    """The table's lines as one text; sections open with a blank line, the first one need not."""
    return "\n".join(lines).lstrip("\n")
