"""UI labels in English and Dutch: the English text is the key; `NL` holds its Dutch translation.

Reason codes, campaign names and the policy's explanations stay as they are (they are codes and evidence).
The language comes from `?lang=`, then the `gk_lang` cookie, then `Accept-Language`, else English.
"""

# ruff: noqa: E501 (a translation table reads best one entry per line)
from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "nl")
DEFAULT = "en"

NL: dict[str, str] = {
    "%(number)s erased: %(removed)s records removed; a suppression remains.": "%(number)s gewist: %(removed)s gegevens verwijderd; een blokkering blijft.",
    "Action": "Actie",
    "All decisions for this number": "Alle beslissingen voor dit nummer",
    "All numbers": "Alle nummers",
    "Allowed": "Toegestaan",
    "Audit": "Audit",
    "Blocked calls per campaign": "Geblokkeerde gesprekken per campagne",
    "Blocked calls per reason": "Geblokkeerde gesprekken per reden",
    "Blocked": "Geblokkeerd",
    "Call ids": "Gesprek-id's",
    "Campaign": "Campagne",
    "Cancel": "Annuleren",
    "Choose a range of at most a year, from before to.": "Kies een periode van hoogstens een jaar, van vóór tot.",
    "Clear": "Wissen",
    "Confirm": "Bevestigen",
    "Continue": "Verder",
    "Dates are written YYYY-MM-DD, from %(first)s to %(last)s.": "Datums schrijf je als JJJJ-MM-DD, van %(first)s tot %(last)s.",
    "Days in %(zone)s.": "Dagen in %(zone)s.",
    "Decision log": "Beslissingslog",
    "Decision": "Beslissing",
    "Decisions for this number": "Beslissingen voor dit nummer",
    "Decisions": "Beslissingen",
    "Details": "Details",
    "Download access report (CSV)": "Inzageoverzicht downloaden (CSV)",
    "End": "Einde",
    "Erase %(number)s? Every fact about it is removed for every tenant. This cannot be undone.": "%(number)s wissen? Alle gegevens erover worden voor elke klant verwijderd. Dit kan niet ongedaan worden.",
    "Erase a number": "Een nummer wissen",
    "Erasure": "Wissen",
    "Every change made through the API or the UI, and every access report, with who made it.": "Elke wijziging via de API of de interface, en elk inzageverzoek, met wie het deed.",
    "Everything gatekeeper holds about one number: its facts for every tenant and every decision (GDPR art. 15). "
    "The number is hashed, never stored.": "Alles wat gatekeeper over één nummer weet: de gegevens per klant en elke beslissing (AVG art. 15). "
    "Het nummer wordt gehasht, nooit bewaard.",
    "Evidence reference": "Bewijsreferentie",
    "Explanation": "Uitleg",
    "Export CSV": "CSV exporteren",
    "Facts in the consent index": "Gegevens in de toestemmingsindex",
    "Filter": "Filteren",
    "Filters": "Filters",
    "From": "Van",
    "GDPR art. 17: removes every fact about the number for every tenant and keeps only a suppression hash, so the "
    "number is never called again. This cannot be undone.": "AVG art. 17: verwijdert alle gegevens over het nummer voor elke klant en bewaart alleen een "
    "blokkeringshash, zodat het nummer nooit meer gebeld wordt. Dit kan niet ongedaan worden.",
    "Hash chain": "Hashketen",
    "Hash": "Hash",
    "Index error": "Indexfout",
    "Index generation": "Indexgeneratie",
    "Instance": "Instantie",
    "Kind": "Soort",
    "Latency": "Looptijd",
    "Log in with an API token. Your administrator gives you one; it is shown only once.": "Log in met een API-token. Je beheerder geeft je er een; het wordt maar één keer getoond.",
    "Log in": "Inloggen",
    "Log out": "Uitloggen",
    "Look up": "Opzoeken",
    "Main": "Hoofdmenu",
    "Newest": "Nieuwste",
    "No blocked calls.": "Geen geblokkeerde gesprekken.",
    "No decision with that id.": "Geen beslissing met dat id.",
    "No decisions match.": "Geen beslissingen gevonden.",
    "No facts on record.": "Geen gegevens bekend.",
    "Nothing yet.": "Nog niets.",
    "Number hash": "Nummerhash",
    "Number look-up": "Nummer opzoeken",
    "Number": "Nummer",
    "Objection registered for %(number)s (tenant %(tenant)s).": "Bezwaar geregistreerd voor %(number)s (klant %(tenant)s).",
    "Objection": "Bezwaar",
    "Older": "Ouder",
    "Pages": "Pagina's",
    "Previous hash": "Vorige hash",
    "Reason": "Reden",
    "Reference (e.g. the letter or ticket)": "Referentie (bijv. de brief of het ticket)",
    "Reference": "Referentie",
    "Regime": "Regime",
    "Register an objection for %(number)s for tenant %(tenant)s?": "Bezwaar registreren voor %(number)s voor klant %(tenant)s?",
    "Register an objection": "Bezwaar registreren",
    "Role": "Rol",
    "Rule": "Regel",
    "Sequence": "Volgnummer",
    "Show": "Tonen",
    "Showing one number only (hash %(hash)s).": "Alleen één nummer (hash %(hash)s).",
    "Source": "Bron",
    "Start": "Begin",
    "Stored": "Opgeslagen",
    "Stream id": "Stream-id",
    "Summary": "Overzicht",
    "Tenant": "Klant",
    "That token is not valid.": "Dat token is niet geldig.",
    "The form has expired. Go back, reload the page and try again.": "Het formulier is verlopen. Ga terug, laad de pagina opnieuw en probeer het nog eens.",
    "The form is too large.": "Het formulier is te groot.",
    "The login form has expired; please try again.": "Het inlogformulier is verlopen; probeer het opnieuw.",
    "The objection takes effect at once: the next call to this number for the tenant is blocked, on every "
    "gatekeeper.": "Het bezwaar geldt meteen: het volgende gesprek naar dit nummer voor de klant wordt geblokkeerd, op "
    "elke gatekeeper.",
    "Time": "Tijd",
    "Times in the time zone of each campaign, with the offset from UTC.": "Tijden in de tijdzone van elke campagne, met het verschil met UTC.",
    "To": "Tot en met",
    "Token": "Token",
    "Verdict": "Oordeel",
    "Who": "Wie",
    "Would block (monitor mode)": "Zou blokkeren (monitormodus)",
    "Yes, erase the number": "Ja, wis het nummer",
    "Yes, register the objection": "Ja, registreer het bezwaar",
    "Your role may not do this.": "Je rol mag dit niet.",
    "all decisions for this number": "alle beslissingen voor dit nummer",
    "all": "alle",
    "allow": "toegestaan",
    "block": "geblokkeerd",
    "consent": "toestemming",
    "customer": "klantrelatie",
    "objection": "bezwaar",
    "other": "overig",
    "suppression": "blokkering",
    "would block": "zou blokkeren",
    "hashed, never stored": "gehasht, nooit bewaard",
    "admin": "beheerder",
    "compliance": "compliance",
    "viewer": "lezer",
}
EN_LABELS = {"allow": "allowed", "block": "blocked"}  # codes shown as words in English too


def translator(lang: str) -> Callable[[str], str]:
    table = NL if lang == "nl" else EN_LABELS

    def translate(text: str) -> str:
        return table.get(text, text)

    return translate


def _accepted(header: str) -> list[tuple[float, str]]:
    ranked = []
    for position, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower().split("-")[0]))
    return [(q, lang) for q, _, lang in sorted(ranked)]


def choose(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The UI language: `?lang=`, then the cookie, then the first of en/nl in Accept-Language, else English."""
    for explicit in (query, cookie):
        if explicit is not None and explicit in LANGUAGES:
            return explicit
    for _quality, lang in _accepted(accept_language or ""):
        if lang in LANGUAGES:
            return lang
    return DEFAULT
