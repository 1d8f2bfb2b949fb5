"""FHIR narrative XHTML restricted to what R4 allows, so no stored narrative can carry active
content into the EHRs and apps that render it.

R4 Narrative.div (narrative-definitions.html, invariant txt-1): "only the basic html formatting
elements and attributes described in chapters 7-11 (except section 4 of chapter 9) and 15 of
the HTML 4.0 standard, <a> elements (either name or href), images and internally contained
style attributes"; "SHALL NOT contain a head, a body, external stylesheet references, scripts,
forms, base/link/xlink, frames, iframes, objects or event related attributes (e.g. onClick)".
The root is a `div` in the XHTML namespace (narrative.html#xhtml).

This is an allow-list, checked on a real XML parse (expat): elements and attributes not listed
are refused, and so are URLs whose scheme could run code. Constructs that XML and HTML parse
differently (CDATA sections, processing instructions, comments holding `>`, a DOCTYPE) are
refused too: a browser rendering the narrative as HTML must see exactly the tree checked here.
Problems name elements and attributes, never their values (patient data).
"""

from __future__ import annotations

import re
from xml.parsers import expat

XHTML = "http://www.w3.org/1999/xhtml"
XML_NS = "http://www.w3.org/XML/1998/namespace"

# HTML 4.0 chapters 7-11 and 15 (no ins/del: chapter 9 section 4), plus a and img (txt-1);
# the same list the HL7 validator accepts.
ELEMENTS = frozenset(
    "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd dfn div dl dt "
    "em h1 h2 h3 h4 h5 h6 hr i img kbd li map area ol p pre q samp small span strong sub sup "
    "table tbody td tfoot th thead tr tt ul var".split()
)
# Attributes of those chapters: core, i18n, presentation and table attributes; no event (on*).
ATTRIBUTES = frozenset(
    "abbr accesskey align alt axis bgcolor border cellpadding cellspacing char charoff cite class "
    "colspan compact coords dir frame headers height href hreflang hspace id lang longdesc name "
    "nowrap rel rev rowspan rules scope shape span src start style summary tabindex title type "
    "usemap valign value vspace width".split()
)
URL_ATTRIBUTES = frozenset({"href", "src", "cite", "longdesc", "usemap"})
SAFE_SCHEMES = frozenset({"http", "https", "mailto", "tel", "urn"})
# Images may be inline (R4 narrative.html#xhtml: "data: URLs ... for images"); SVG may script.
_IMAGE_DATA = re.compile(r"data:image/(png|gif|jpeg|webp)[;,]", re.I)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# Browsers drop tabs and newlines anywhere in a URL and strip C0 controls and spaces around it.
_URL_IGNORED = re.compile(r"[\t\n\r]")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))
# CSS that loads or runs something; escapes and comments could hide those words, so they go too.
_UNSAFE_STYLE = re.compile(r"url\(|expression|javascript:|@import|behavior|binding|\\|/\*", re.I)


class UnsafeNarrative(Exception):
    """Why a narrative is refused, naming only elements and attributes."""


def narrative_problem(xhtml: str) -> str | None:
    """None if `xhtml` is an allowed R4 narrative, else what is wrong with it."""
    checker = _Checker()
    try:
        checker.parse(xhtml)
    except UnsafeNarrative as exc:
        return str(exc)
    except expat.ExpatError as exc:
        return f"the XHTML is not well-formed ({expat.errors.messages.get(exc.code, 'syntax error')})"
    return None


class _Checker:
    def __init__(self) -> None:
        self.path: list[str] = []
        self.parser = expat.ParserCreate("UTF-8", " ")
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.StartDoctypeDeclHandler = self.refuse("a DOCTYPE")
        self.parser.EntityDeclHandler = self.refuse("an entity declaration")
        self.parser.ProcessingInstructionHandler = self.refuse("a processing instruction")
        self.parser.StartCdataSectionHandler = self.refuse("a CDATA section")
        self.parser.CommentHandler = self.comment

    def parse(self, xhtml: str) -> None:
        self.parser.Parse(xhtml, True)

    def refuse(self, what: str):
        def handler(*_args) -> None:
            raise UnsafeNarrative(f"{what} is not allowed in a narrative{self.where()}")

        return handler

    def comment(self, text: str) -> None:
        # HTML ends a comment at `<!-->` or `--!>`, XML does not: with no `>` inside they agree.
        if ">" in text:
            raise UnsafeNarrative(f"a comment containing '>' is not allowed{self.where()}")

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if not self.path and (local != "div" or namespace != XHTML):
            raise UnsafeNarrative(f"the root must be a div in the XHTML namespace ({XHTML})")
        self.path.append(local)
        if namespace != XHTML or local not in ELEMENTS:
            raise UnsafeNarrative(f"element '{local}' is not allowed in a narrative{self.where()}")
        for attribute, value in attributes.items():
            _check_attribute(local, attribute, value, self.where())

    def end(self, _name: str) -> None:
        self.path.pop()

    def where(self) -> str:
        return f" (at {'/'.join(self.path)})" if self.path else ""


def _check_attribute(element: str, attribute: str, value: str, where: str) -> None:
    namespace, _, local = attribute.rpartition(" ")
    if namespace == XML_NS and local == "lang":
        return
    if namespace or local not in ATTRIBUTES:
        raise UnsafeNarrative(f"attribute '{local}' is not allowed in a narrative{where}")
    if local in URL_ATTRIBUTES and not _safe_url(value, image=element == "img" and local == "src"):
        raise UnsafeNarrative(f"the URL scheme of '{local}' is not allowed in a narrative{where}")
    if local == "style" and _UNSAFE_STYLE.search(value):
        raise UnsafeNarrative(f"the style attribute may not load or run anything{where}")


def _safe_url(value: str, image: bool) -> bool:
    url = _URL_IGNORED.sub("", value).strip(_C0_AND_SPACE)
    scheme = _SCHEME.match(url)
    if scheme is None:
        return True  # relative: a fragment (#id) or a reference such as Patient/123
    if image and _IMAGE_DATA.match(url):
        return True
    return scheme.group(1).lower() in SAFE_SCHEMES
