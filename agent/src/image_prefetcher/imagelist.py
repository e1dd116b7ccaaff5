"""The image list: `--image-list-file` lines (trimmed, blank and `#` lines skipped) then positional args verbatim."""

from __future__ import annotations

from collections.abc import Iterable

from image_prefetcher.errors import CommandError

# Go's unicode.IsSpace set (strings.TrimSpace). Python's str.strip() would also strip \x1c-\x1f, Go does not.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def parse_image_list(text: str) -> list[str]:
    """Split on \\n only, trim Unicode whitespace, skip empty and `#` lines; no inline comments, duplicates kept."""
    images = []
    for line in text.split("\n"):
        image = line.strip(GO_SPACE)
        if image and not image.startswith("#"):
            images.append(image)
    return images


def os_error_text(action: str, path: str, err: OSError) -> str:
    """Go-style OS error text, e.g. `open /x: no such file or directory`."""
    reason = err.strerror or str(err)
    return f"{action} {path}: {reason[:1].lower()}{reason[1:]}"


def read_image_list_file(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except IsADirectoryError as err:
        raise CommandError(os_error_text("read", path, err)) from None
    except OSError as err:
        raise CommandError(os_error_text("open", path, err)) from None
    return parse_image_list(data.decode("utf-8", errors="replace"))


def load_images(list_file: str, positional: Iterable[str]) -> list[str]:
    """File images first, then positional args unmodified (not trimmed, not filtered), as upstream."""
    images = read_image_list_file(list_file) if list_file else []
    images.extend(positional)
    return images


def unique_in_order(images: Iterable[str]) -> list[str]:
    """Duplicates are one image: pulled once, counted once (first position wins)."""
    return list(dict.fromkeys(images))
