"""A phone number's type, as the contacts API answers it (RingCentral Embeddable's vocabulary),
from whatever label a source gives the number.

Sources name their numbers in many ways: vCard ``TEL;TYPE=cell`` or ``TYPE=work,voice``
(RFC 6350: work, home, cell, fax, pager, voice, text, video, textphone), Apple's ``_$!<Mobile>!$_``,
Google Contacts' "Phone 1 - Label" (Mobile, Work, Home, Main, Work Fax, Pager, Other or the user's
own words), Outlook's columns (Business Phone, Home Fax, Company Main Phone, Assistant's Phone...),
LDAP attribute names (telephoneNumber, mobile, homePhone, facsimileTelephoneNumber, pager), CRM
fields (HubSpot ``mobilephone``, Odoo ``mobile``, Pipedrive's work/home/mobile/other labels), in
English, German and French. :func:`phone_type` reads them all.
"""

from __future__ import annotations

import functools
import re
import unicodedata

PHONE_TYPES = ("direct", "mobile", "business", "home", "fax", "extension", "other", "unknown")

# Whole labels that are one word for a phrase (LDAP attribute names, CRM field names).
_WHOLE: dict[str, str] = {
    **dict.fromkeys(("telephonenumber", "othertelephone", "ipphone", "otheripphone", "businessphone", "workphone",
                     "companymain", "companymainphone", "officephone", "worknumber"), "business"),
    **dict.fromkeys(("homephone", "otherhomephone", "homenumber", "privatephone"), "home"),
    **dict.fromkeys(("mobilephone", "othermobile", "mobilenumber", "cellphone", "mobiltelefon", "mobilnummer",
                     "handynummer", "mobiletelephonenumber"), "mobile"),
    **dict.fromkeys(("facsimiletelephonenumber", "faxnumber", "telefax", "businessfax", "homefax", "otherfax",
                     "workfax"), "fax"),
    **dict.fromkeys(("directdial", "directline", "durchwahl"), "direct"),
}
# Words of a label, strongest first: a "Home Fax" is a fax, a "Work Mobile" a mobile.
_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("fax", frozenset({"fax", "facsimile", "telefax", "telecopie", "telecopieur"})),
    ("mobile", frozenset({"mobile", "mobil", "cell", "cellular", "cellphone", "handy", "natel", "iphone",
                          "portable", "gsm", "cellulaire", "movil", "celular", "cellulare"})),
    # numbers that reach someone or something else than the contact's own line
    ("other", frozenset({"pager", "beeper", "textphone", "tty", "tdd", "car", "auto", "autotelefon", "radio", "isdn",
                         "telex", "callback", "ruckruf", "ruckmeldung", "assistant", "assistants", "assistent",
                         "assistente"})),
    ("direct", frozenset({"direct", "directe", "direkt", "ddi", "did"})),
    ("home", frozenset({"home", "private", "privat", "personal", "personnel", "domicile", "residence", "maison",
                        "zuhause", "casa"})),
    ("business", frozenset({"work", "business", "office", "buro", "bureau", "geschaftlich", "geschaft", "dienstlich",
                            "arbeit", "company", "main", "zentrale", "firma", "professional", "professionnel",
                            "travail", "societe", "entreprise", "principal", "lavoro", "ufficio"})),
)
# Words that say nothing of the number's kind: "voice", "pref", "Phone 2" alone are "unknown".
_NEUTRAL = frozenset({"voice", "pref", "preferred", "phone", "telephone", "tel", "telefon", "telefono", "number",
                      "nummer", "numero", "nr", "no", "value", "type", "label", "x", "s"})
_APPLE = re.compile(r"_\$!<(.*?)>!\$_")
_WORD = re.compile(r"[a-z]+")


@functools.lru_cache(maxsize=4096)  # an import or a sync reads the same few labels on every row
def phone_type(label: str | None) -> str:
    """The Embeddable type (``direct``, ``mobile``, ``business``, ``home``, ``fax``, ``other`` or
    ``unknown``) of a number a source labels ``label``: a vCard TYPE list ("work,voice"), a
    spreadsheet column or label ("Business Phone 2", "Mobil", "Büro"), an attribute or field name
    ("facsimileTelephoneNumber", "mobilephone"). No label, or one that only says it is a phone:
    ``unknown``; a label of the user's own that names no kind ("Oma", "Google Voice"): ``other``.
    An internal number's ``extension`` depends on the number, not the label: the caller decides it."""
    if not label:
        return "unknown"
    text = _APPLE.sub(r" \1 ", label)
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))
    whole = "".join(_WORD.findall(text))
    if whole in _WHOLE:
        return _WHOLE[whole]
    words = _WORD.findall(re.sub(r"\bx-", " ", text))  # vCard's private types: "X-MOBILE"
    for kind, known in _WORDS:
        if any(word in known or _WHOLE.get(word) == kind for word in words):
            return kind
    if any(word not in _NEUTRAL for word in words):
        return "other"
    return "unknown"
