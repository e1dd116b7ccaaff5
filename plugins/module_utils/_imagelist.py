# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image list: the agent's file parsing rules, and the list the ConfigMap carries.

The agent reads ``images.txt`` with upstream's rules (TESTCASES §7): split on ``\\n`` only,
trim with Go's ``strings.TrimSpace``, skip empty lines and lines starting with ``#``.
The module applies the same rules to ``images_file``, so what the user sees in the result
is exactly what every node will pull.
"""

from __future__ import annotations

import re
import typing as t

from ansible_collections.stackrox.prefetch.plugins.module_utils._errors import ValidationError

# Go's unicode.IsSpace, which strings.TrimSpace uses. Python's str.strip() differs: it also
# strips U+001C..U+001F, which Go keeps, so the set is spelled out.
GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

# The reference grammar of distribution/reference (regexp.go), which containerd and CRI-O parse every image with.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = re.compile(rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_NAME_MAX = 255

# A ConfigMap's whole data must stay below 1 MiB; leave room for the object's metadata.
MAX_LIST_BYTES = 1000 * 1024


def go_trim_space(text: str) -> str:
    """Trim leading and trailing whitespace exactly as Go's strings.TrimSpace does."""
    return text.strip(GO_WHITESPACE)


def parse_image_list(text: str) -> list[str]:
    """Return the images of an image-list file's text, in file order, duplicates kept."""
    images = []
    for line in text.split("\n"):
        trimmed = go_trim_space(line)
        if trimmed and not trimmed.startswith("#"):
            images.append(trimmed)
    return images


def decode_image_list_file(path: str, data: bytes) -> list[str]:
    """Parse the bytes of an image-list file; the path only names the file in errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValidationError(f"images_file {path!r} is not valid UTF-8 (byte {error.start})") from None
    return parse_image_list(text)


def read_image_list_file(path: str) -> list[str]:
    """Read and parse an image-list file on the host the module runs on."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ValidationError(f"images_file {path!r} cannot be read: {error.strerror or error}") from None
    return decode_image_list_file(path, data)


def clean_listed_images(images: t.Sequence[t.Any]) -> list[str]:
    """Check the ``images`` option's entries, which go into the same file as the agent reads.

    Each entry is trimmed like a file line; an entry the file parser would drop or split
    (empty, a comment, several lines) is an error rather than silently lost.
    """
    cleaned = []
    for index, entry in enumerate(images):
        if not isinstance(entry, str):
            raise ValidationError(f"images[{index}] must be a string, got {type(entry).__name__}")
        trimmed = go_trim_space(entry)
        if not trimmed:
            raise ValidationError(f"images[{index}] is empty")
        if "\n" in trimmed:
            raise ValidationError(f"images[{index}] {trimmed.splitlines()[0]!r}... spans several lines")
        if trimmed.startswith("#"):
            raise ValidationError(f"images[{index}] {trimmed!r} starts with '#' and would be read as a comment")
        cleaned.append(trimmed)
    return cleaned


def combine_image_lists(file_images: t.Sequence[str], listed_images: t.Sequence[str]) -> list[str]:
    """File images first, then the listed ones, as the agent orders file + positional images."""
    return list(file_images) + list(listed_images)


def unique_images(images: t.Sequence[str]) -> list[str]:
    """The distinct images in first-seen order: the agent pulls a duplicate entry once."""
    seen: dict[str, None] = {}
    for image in images:
        seen.setdefault(image, None)
    return list(seen)


def image_list_text(images: t.Sequence[str]) -> str:
    """The ``images.txt`` content: one image per line, newline-terminated."""
    return "".join(image + "\n" for image in images)


def check_image_list_size(images: t.Sequence[str]) -> None:
    """Refuse a list that the API server would reject as a ConfigMap."""
    size = len(image_list_text(images).encode("utf-8"))
    if size > MAX_LIST_BYTES:
        raise ValidationError(
            f"the image list is {size} bytes, more than the {MAX_LIST_BYTES} bytes a ConfigMap can carry"
        )


def reference_problem(image: str) -> t.Optional[str]:
    """Why ``image`` is not an image reference the nodes' runtime can parse, or None when it is one.

    The check follows distribution/reference: ``name[:tag][@digest]``, lower-case path components, a name of at
    most 255 characters. It only informs (the agent reports such an image as ``invalid_reference`` on every node).
    """
    name, at, digest = image.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return f"digest {digest!r} is not '<algorithm>:<hex>'"
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return f"tag {tag!r} is not valid"
    if not _NAME.fullmatch(name):
        if name.lower() != name and _NAME.fullmatch(name.lower()):
            return "the repository must be lower-case"
        return "it does not match the reference format"
    if len(name) > _NAME_MAX:
        return f"the repository name is longer than {_NAME_MAX} characters"
    return None


def reference_warning(images: t.Sequence[str], shown: int = 3) -> t.Optional[str]:
    """One warning naming the entries that are not image references (the first ``shown`` of them), or None."""
    problems = []
    for image in unique_images(images):
        problem = reference_problem(image)
        if problem is not None:
            problems.append(f"{image!r} ({problem})")
    if not problems:
        return None
    more = f" and {len(problems) - shown} more" if len(problems) > shown else ""
    return (
        f"{len(problems)} image list entr{'y is' if len(problems) == 1 else 'ies are'} not a valid image reference, "
        f"every node will fail {'it' if len(problems) == 1 else 'them'}: {', '.join(problems[:shown])}{more}"
    )
