"""From result rows to what people read: the HTML/PNG report, interactive charts, the live rebuild, --compare."""
