"""Conversion between the FHIR R4 JSON and XML representations of a resource.

The server stores and reasons about JSON; this module lets clients speak XML
(http://hl7.org/fhir/R4/xml.html) by converting at the edge. Element order, which properties
are attributes, which are primitives and where nested resources sit all come from the R4
registry, so XML follows the same definitions as validation and search.

Decimals read from XML become an int when written without a fraction or exponent and a float
otherwise, matching what a JSON parser produces for the same text (orjson cannot serialize
decimal.Decimal). Callers that must keep the written precision pass
`parse_decimal=decimal.Decimal`; resource_to_xml accepts Decimal values too.

Reading accepts children in any order (writing always uses definition order), drops XML
comments, and ignores xsi:* attributes. Error messages name the element path but never quote
values: they may be patient data.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Container
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from fhirserver.registry import r4

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_FHIR = "{" + FHIR_NS + "}"
_XHTML = "{" + XHTML_NS + "}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# Tools often add xsi:schemaLocation; it carries no FHIR content.
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

_INTEGER_TYPES = frozenset({"integer", "unsignedInt", "positiveInt"})
_TYPED = _INTEGER_TYPES | {"boolean", "decimal"}
_INTEGER = re.compile(r"[-+]?[0-9]{1,32}")  # the bound keeps int() cheap; ranges are validation's job
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # datatypes.html#decimal
# Characters outside XML 1.0's Char production cannot be written at all, even as references.
_INVALID_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_SPECIAL = re.compile('[&<>"\n\r\t]|' + _INVALID_CHAR.pattern)
_TEXT_SPECIAL = re.compile("[&<>\r]|" + _INVALID_CHAR.pattern)


class XmlFormatError(ValueError):
    """The document or resource cannot be converted; the message names where, never values."""


@dataclass(frozen=True, slots=True)
class _Slot:
    """One JSON property of a type, as XML needs it."""

    name: str  # JSON property name, which is also the XML element name (valueQuantity)
    index: int  # position of its element in definition order
    code: str  # type code
    repeats: bool
    kind: str  # attribute | primitive | xhtml | resource | complex


@cache
def _slots(type_name: str) -> dict[str, _Slot]:
    registry = r4()
    definition = registry.type(type_name)
    index = {element.name: i for i, element in enumerate(definition.elements)}
    slots = {}
    for name, (element, code) in definition.properties.items():
        # xml.html#1.17.1: Element.id and Extension.url are attributes; Resource.id is not.
        if (name == "id" and definition.kind != "resource") or (name == "url" and type_name == "Extension"):
            kind = "attribute"
        elif code == "xhtml":
            kind = "xhtml"
        elif registry.is_primitive(code):
            kind = "primitive"
        elif code == "Resource" or registry.is_resource_type(code):
            kind = "resource"
        else:
            kind = "complex"
        slots[name] = _Slot(name, index[element.name], code, element.repeats, kind)
    return slots


@cache
def _attribute_slots(type_name: str) -> dict[str, _Slot]:
    return {name: slot for name, slot in _slots(type_name).items() if slot.kind == "attribute"}


@cache
def _slots_by_tag(type_name: str) -> dict[str, _Slot]:
    """The child elements a type allows, keyed by qualified tag as ElementTree reports it."""
    return {
        (_XHTML + "div" if slot.kind == "xhtml" else _FHIR + name): slot
        for name, slot in _slots(type_name).items()
        if slot.kind != "attribute"
    }


def _parse_text(text: str, what: str) -> ET.Element:
    # Entities need a DTD, so refusing DOCTYPE outright rules out XXE and entity expansion.
    if "<!DOCTYPE" in text:
        raise XmlFormatError(f"{what}: DOCTYPE declarations are not allowed")
    try:
        # S314: no DOCTYPE means no entities; a str makes expat ignore any declared encoding.
        return ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise XmlFormatError(f"{what} is not well-formed XML ({exc})") from None


def _escape(value: str, special: re.Pattern, path: str) -> str:
    if special.search(value) is None:
        return value
    if _INVALID_CHAR.search(value):
        raise XmlFormatError(f"{path}: contains a character that XML 1.0 cannot represent")
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if special is _TEXT_SPECIAL:
        return value.replace("\r", "&#13;")
    # Parsers normalize raw whitespace in attributes to spaces, so it must go as references.
    return value.replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")


def _attribute(name: str, text: str, path: str) -> str:
    return f' {name}="{_escape(text, _ATTRIBUTE_SPECIAL, path)}"'


def _lexical(value: Any, code: str, path: str) -> str:
    """The XML value attribute for a JSON primitive value of the given type."""
    kind = type(value)
    if code == "boolean":
        if kind is bool:
            return "true" if value else "false"
    elif code in _INTEGER_TYPES:
        if kind is int:
            return str(value)
    elif code == "decimal":
        if kind is int or kind is float or kind is Decimal:
            text = repr(value) if kind is float else str(value)
            if _DECIMAL.fullmatch(text):  # also rejects nan and inf
                return text
    elif kind is str:
        return value
    raise XmlFormatError(f"{path}: expected a JSON value of FHIR type {code}")


def _xhtml_to_text(element: ET.Element, parts: list[str], path: str, root: bool = True) -> None:
    """Serialize a narrative div back to text with XHTML as the default namespace.

    Hand-written rather than ET.tostring, which cannot use a default namespace together with
    unqualified attributes and writes `<br />` where FHIR JSON conventionally has `<br/>`.
    """
    if not element.tag.startswith(_XHTML):
        raise XmlFormatError(f"{path}: the narrative may only contain XHTML elements")
    name = element.tag[len(_XHTML) :]
    attributes = f' xmlns="{XHTML_NS}"' if root else ""
    for key, value in element.attrib.items():
        if key == _XML_LANG:
            key = "xml:lang"
        elif key.startswith("{"):
            raise XmlFormatError(f"{path}: the narrative has an attribute in a foreign namespace")
        attributes += _attribute(key, value, path)
    if element.text is None and len(element) == 0:
        parts.append(f"<{name}{attributes}/>")
        return
    parts.append(f"<{name}{attributes}>")
    parts.append(_escape(element.text or "", _TEXT_SPECIAL, path))
    for child in element:
        _xhtml_to_text(child, parts, path, root=False)
        parts.append(_escape(child.tail or "", _TEXT_SPECIAL, path))
    parts.append(f"</{name}>")


def _narrative_div(text: Any, path: str) -> str:
    if not isinstance(text, str):
        raise XmlFormatError(f"{path}: expected the narrative XHTML as a string")
    element = _parse_text(text, path)
    if element.tag != _XHTML + "div":
        raise XmlFormatError(f"{path}: the narrative must be a single XHTML div element")
    parts: list[str] = []
    _xhtml_to_text(element, parts, path)
    return "".join(parts)


class _Writer:
    """Builds the XML text of one resource; JSON properties are written in definition order."""

    def __init__(self, pretty: bool):
        self.parts = [_DECLARATION]
        self.pretty = pretty
        self.depth = 0
        self.just_opened = False

    def _newline(self) -> None:
        if self.pretty:
            self.parts.append("\n" + "  " * self.depth)

    def start(self, tag: str, attributes: str = "") -> None:
        self._newline()
        self.parts.append(f"<{tag}{attributes}>")
        self.depth += 1
        self.just_opened = True

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.just_opened:
            self.parts[-1] = self.parts[-1][:-1] + "/>"
        else:
            self._newline()
            self.parts.append(f"</{tag}>")
        self.just_opened = False

    def raw(self, text: str) -> None:
        self._newline()
        self.parts.append(text)
        self.just_opened = False

    def resource(self, resource: Any, expected: str, path: str, root: bool = False) -> None:
        registry = r4()
        name = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(name, str) or not registry.is_resource_type(name):
            raise XmlFormatError(f"{path or 'resource'}: resourceType is missing or not an R4 resource type")
        if expected != "Resource" and name != expected:
            raise XmlFormatError(f"{path}: must be a {expected} resource")
        self.start(name, f' xmlns="{FHIR_NS}"' if root else "")
        self.properties(resource, name, path or name, is_resource=True)
        self.end(name)

    def complex(self, tag: str, value: Any, type_name: str, path: str) -> None:
        if not isinstance(value, dict):
            raise XmlFormatError(f"{path}: expected a JSON object")
        attributes = ""
        for slot in _attribute_slots(type_name).values():
            if slot.name in value:
                attributes += _attribute(slot.name, _lexical(value[slot.name], slot.code, path), path)
        self.start(tag, attributes)
        self.properties(value, type_name, path)
        self.end(tag)

    def properties(self, value: dict, type_name: str, path: str, is_resource: bool = False) -> None:
        slots = _slots(type_name)
        present: dict[int, _Slot] = {}
        for key in value:
            name = key[1:] if key.startswith("_") else key
            slot = slots.get(name)
            if slot is None:
                if is_resource and key == "resourceType":
                    continue
                raise XmlFormatError(f"{path}: unknown property '{key}'")
            if slot.kind != "primitive" and name != key:
                raise XmlFormatError(f"{path}.{name}: only primitive values can have '_{name}'")
            if present.setdefault(slot.index, slot) is not slot:
                raise XmlFormatError(f"{path}.{name}: more than one type given for a choice element")
        for index in sorted(present):
            slot = present[index]
            if slot.kind != "attribute":
                self.slot(value, slot, f"{path}.{slot.name}")

    def slot(self, value: dict, slot: _Slot, path: str) -> None:
        items, extras = value.get(slot.name), value.get("_" + slot.name)
        if not slot.repeats:
            self.item(slot, items, extras, path)
            return
        if not all(isinstance(found, list) for found in (items, extras) if found is not None):
            raise XmlFormatError(f"{path}: expected a JSON array")
        items = items if items is not None else [None] * len(extras)
        extras = extras if extras is not None else [None] * len(items)
        if len(items) != len(extras):
            raise XmlFormatError(f"{path}: the value and '_' arrays differ in length")
        for i, (item, extra) in enumerate(zip(items, extras, strict=True)):
            self.item(slot, item, extra, f"{path}[{i}]")

    def item(self, slot: _Slot, item: Any, extra: Any, path: str) -> None:
        if slot.kind == "primitive":
            self.primitive(slot, item, extra, path)
        elif slot.kind == "xhtml":
            self.raw(_narrative_div(item, path))
        elif slot.kind == "resource":
            self.start(slot.name)
            self.resource(item, slot.code, path)
            self.end(slot.name)
        else:
            self.complex(slot.name, item, slot.code, path)

    def primitive(self, slot: _Slot, item: Any, extra: Any, path: str) -> None:
        """xml.html#1.17.1: the value goes in an attribute, the id and extensions beside it."""
        if item is None and extra is None:
            raise XmlFormatError(f"{path}: null without extensions")
        attributes, extensions = "", []
        if extra is not None:
            if not isinstance(extra, dict) or extra.keys() - {"id", "extension"}:
                raise XmlFormatError(f"{path}: '_' may only hold id and extension")
            if "id" in extra:
                attributes = _attribute("id", _lexical(extra["id"], "string", path), path)
            extensions = extra.get("extension", [])
            if not isinstance(extensions, list):
                raise XmlFormatError(f"{path}.extension: expected a JSON array")
        if item is not None:
            attributes += _attribute("value", _lexical(item, slot.code, path), path)
        self.start(slot.name, attributes)
        for i, extension in enumerate(extensions):
            self.complex("extension", extension, "Extension", f"{path}.extension[{i}]")
        self.end(slot.name)


def _number(text: str) -> int | float:
    """Decimal text as a JSON parser would read it: int without fraction or exponent, else float."""
    if _INTEGER.fullmatch(text):
        return int(text)
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("beyond the float range")
    return number


def _reject_text(text: str | None, path: str) -> None:
    if text and not text.isspace():
        raise XmlFormatError(f"{path}: text content is not allowed here")


def _check_attributes(element: ET.Element, allowed: Container[str], path: str) -> None:
    for key in element.attrib:
        if key not in allowed and not key.startswith(_XSI):
            raise XmlFormatError(f"{path}: unexpected attribute '{key}'")


def _unknown(child: ET.Element, path: str) -> XmlFormatError:
    namespace, _, name = child.tag[1:].rpartition("}") if child.tag.startswith("{") else ("", "", child.tag)
    if namespace == FHIR_NS:
        return XmlFormatError(f"{path}: unknown element '{name}'")
    where = f"namespace '{namespace}'" if namespace else "no namespace"
    return XmlFormatError(f"{path}: element '{name}' is in {where}, expected {FHIR_NS}")


class _Reader:
    """Builds the JSON of one resource from its parsed XML."""

    def __init__(self, parse_decimal: Callable[[str], Any]):
        self.parse_decimal = parse_decimal

    def resource(self, element: ET.Element, expected: str, path: str) -> dict:
        if not element.tag.startswith(_FHIR):
            raise _unknown(element, path or "document")
        name = element.tag[len(_FHIR) :]
        if not r4().is_resource_type(name):
            raise XmlFormatError(f"{path or 'document'}: '{name}' is not an R4 resource type")
        if expected != "Resource" and name != expected:
            raise XmlFormatError(f"{path}: must be a {expected} resource")
        resource = {"resourceType": name}
        self.fill(resource, element, name, path or name)
        return resource

    def fill(self, value: dict, element: ET.Element, type_name: str, path: str) -> None:
        slots = _slots(type_name)
        attributes = _attribute_slots(type_name)
        _check_attributes(element, attributes, path)
        value.update((key, element.attrib[key]) for key in attributes if key in element.attrib)
        _reject_text(element.text, path)
        by_tag = _slots_by_tag(type_name)
        chosen: dict[int, _Slot] = {}
        collected: dict[str, list] = {}
        for child in element:
            slot = by_tag.get(child.tag)
            if slot is None:
                raise _unknown(child, path)
            _reject_text(child.tail, path)
            items = collected.setdefault(slot.name, [])
            child_path = f"{path}.{slot.name}" + (f"[{len(items)}]" if slot.repeats else "")
            if chosen.setdefault(slot.index, slot) is not slot:
                raise XmlFormatError(f"{child_path}: more than one type given for a choice element")
            if items and not slot.repeats:
                raise XmlFormatError(f"{child_path}: the element must not repeat")
            items.append(self.item(child, slot, child_path))
        for name, items in collected.items():
            self.store(value, slots[name], items)

    def item(self, element: ET.Element, slot: _Slot, path: str) -> Any:
        if slot.kind == "primitive":
            return self.primitive(element, slot.code, path)
        if slot.kind == "xhtml":
            parts: list[str] = []
            _xhtml_to_text(element, parts, path)
            return "".join(parts)
        if slot.kind == "resource":
            _check_attributes(element, (), path)
            _reject_text(element.text, path)
            if len(element) != 1:
                raise XmlFormatError(f"{path}: must contain exactly one resource element")
            return self.resource(element[0], slot.code, path)
        value: dict = {}
        self.fill(value, element, slot.code, path)
        return value

    def primitive(self, element: ET.Element, code: str, path: str) -> tuple[Any, dict | None]:
        """The JSON value and the '_' object (id, extensions) of a primitive element."""
        _check_attributes(element, ("value", "id"), path)
        raw = element.get("value")
        extra = {"id": element.attrib["id"]} if "id" in element.attrib else {}
        _reject_text(element.text, path)
        extensions = []
        for child in element:
            if child.tag != _FHIR + "extension":
                raise _unknown(child, path)
            _reject_text(child.tail, path)
            extension: dict = {}
            self.fill(extension, child, "Extension", f"{path}.extension[{len(extensions)}]")
            extensions.append(extension)
        if extensions:
            extra["extension"] = extensions
        if raw is None and not extra:
            raise XmlFormatError(f"{path}: the element has neither a value nor extensions")
        return (None if raw is None else self.convert(raw, code, path)), (extra or None)

    def convert(self, raw: str, code: str, path: str) -> Any:
        if code not in _TYPED:
            return raw
        if code == "boolean" and raw in ("true", "false"):
            return raw == "true"
        if code in _INTEGER_TYPES and _INTEGER.fullmatch(raw):
            return int(raw)
        if code == "decimal" and _DECIMAL.fullmatch(raw):
            try:
                return self.parse_decimal(raw)
            except ValueError:
                pass  # beyond what parse_decimal can represent: reported as invalid below
        raise XmlFormatError(f"{path}: the value is not a valid {code}")

    @staticmethod
    def store(value: dict, slot: _Slot, items: list) -> None:
        if slot.kind != "primitive":
            value[slot.name] = items if slot.repeats else items[0]
            return
        # json.html#primitive: repeating primitives become two arrays aligned with nulls.
        values = [item for item, _ in items]
        extras = [extra for _, extra in items]
        if not slot.repeats:
            values, extras = values[0], extras[0]
        if values is not None and (not slot.repeats or any(v is not None for v in values)):
            value[slot.name] = values
        if extras is not None and (not slot.repeats or any(e is not None for e in extras)):
            value["_" + slot.name] = extras


def resource_to_xml(resource: dict, pretty: bool = False) -> bytes:
    """The R4 XML of a JSON resource, UTF-8 with an XML declaration; XmlFormatError if impossible."""
    writer = _Writer(pretty)
    try:
        writer.resource(resource, "Resource", "", root=True)
    except RecursionError:
        raise XmlFormatError("the resource is nested too deeply") from None
    return "".join(writer.parts).encode("utf-8")


def xml_to_resource(data: bytes, *, parse_decimal: Callable[[str], Any] = _number) -> dict:
    """The JSON form of an R4 XML resource; XmlFormatError if it is not one.

    parse_decimal turns decimal text into the JSON value (default: int or float, see module doc).
    """
    try:
        text = data.decode("utf-8")  # http.html#mime: FHIR content is UTF-8
    except UnicodeDecodeError:
        raise XmlFormatError("the document is not UTF-8") from None
    root = _parse_text(text.removeprefix("\ufeff"), "the document")
    try:
        return _Reader(parse_decimal).resource(root, "Resource", "")
    except RecursionError:
        raise XmlFormatError("the document is nested too deeply") from None
