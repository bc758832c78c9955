"""Every recognizer on German and English examples, plus false-positive traps.

Identifiers below are synthetic with valid check digits; names are invented. Test ids name
the case, never the value, and assertions compare offsets, so no failure prints a value.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.dlp.guard import Screening
from tests.dlp.conftest import span_of, spans, types

Screen = Callable[..., Screening]

# (case id, text, entity type, the part of the text that must be found as that type)
POSITIVE: list[tuple[str, str, str, str]] = [
    # e-mail, IBAN, card, IP
    ("email-de", "Bitte an jonas.weber@example.de schreiben.", "EMAIL_ADDRESS", "jonas.weber@example.de"),
    ("email-en", "Send it to j.smith@example.co.uk today.", "EMAIL_ADDRESS", "j.smith@example.co.uk"),
    ("iban-de-spaced", "Konto: DE89 3704 0044 0532 0130 00, BIC COBADEFFXXX", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
    ("iban-en-gb", "Pay to GB82WEST12345698765432 please.", "IBAN_CODE", "GB82WEST12345698765432"),
    ("card-visa-de", "Kreditkarte 4111 1111 1111 1111 gültig bis 12/27", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("card-mc-2series-en", "Card number 2223003122003222 was declined.", "CREDIT_CARD", "2223003122003222"),
    ("card-amex-en", "Amex 378282246310005 on file.", "CREDIT_CARD", "378282246310005"),
    ("ipv4-de", "Der Zugriff kam von 192.168.17.4 um Mitternacht.", "IP_ADDRESS", "192.168.17.4"),
    ("ipv6-en", "Login from 2001:db8:85a3::8a2e:370:7334 was blocked.", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
    # phone numbers: German landline and mobile, +49 / 0049 / national; NANP
    ("phone-de-plus49", "Tel. +49 30 12345678", "PHONE_NUMBER", "+49 30 12345678"),
    ("phone-de-plus49-0", "erreichbar unter +49 (0)89 123456-78", "PHONE_NUMBER", "+49 (0)89 123456-78"),
    ("phone-de-0049", "Rufnummer 0049 221 9876543", "PHONE_NUMBER", "0049 221 9876543"),
    ("phone-de-national", "Ruf mich an: 030 12345678", "PHONE_NUMBER", "030 12345678"),
    ("phone-de-slash", "Telefon 0711/2345678", "PHONE_NUMBER", "0711/2345678"),
    ("phone-de-parens", "Zentrale (06151) 123456", "PHONE_NUMBER", "(06151) 123456"),
    ("phone-de-mobile", "Handy 0171 2345678", "PHONE_NUMBER", "0171 2345678"),
    ("phone-de-mobile-bare-context", "Meine Handynummer ist 01712345678", "PHONE_NUMBER", "01712345678"),
    ("phone-en-nanp", "Call me at (212) 555-0147 tomorrow.", "PHONE_NUMBER", "(212) 555-0147"),
    ("phone-en-ext", "Phone 206.269.0743x9150", "PHONE_NUMBER", "206.269.0743x9150"),
    ("phone-en-intl", "Reach our office on +44 20 7946 0958.", "PHONE_NUMBER", "+44 20 7946 0958"),
    # addresses
    ("address-de-full", "Lieferung an Musterstraße 12a, 10115 Berlin bitte.", "STREET_ADDRESS", "Musterstraße 12a, 10115 Berlin"),
    ("address-de-hyphen", "wohnhaft Hans-Sachs-Weg 7/2, 80331 München", "STREET_ADDRESS", "Hans-Sachs-Weg 7/2, 80331 München"),
    ("address-de-am", "Treffpunkt Am Alten Markt 3", "STREET_ADDRESS", "Am Alten Markt 3"),
    ("address-de-two-words", "Büro in der Berliner Straße 5", "STREET_ADDRESS", "Berliner Straße 5"),
    ("address-en-full", "Ship to 603 Ray Camp, South Janet, TX 56424 by Monday.", "STREET_ADDRESS", "603 Ray Camp, South Janet, TX 56424"),
    ("address-en-street", "Our office at 12 Main Street is closed.", "STREET_ADDRESS", "12 Main Street"),
    # persons
    ("person-de-honorific", "Sehr geehrte Frau Dr. Keller, anbei der Bericht.", "PERSON", "Keller"),
    ("person-de-full-name", "Anna Maria Schulz kommt morgen ins Büro.", "PERSON", "Anna Maria Schulz"),
    ("person-de-unknown-surname", "Gestern rief Adam Rörricht-Bender an.", "PERSON", "Adam Rörricht-Bender"),
    ("person-de-last-first", "Müller, Anna (Personalabteilung) fehlt.", "PERSON", "Müller, Anna"),
    ("person-de-greeting", "Hallo Leokadia, kannst du mir helfen?", "PERSON", "Leokadia"),
    ("person-de-signature", "Mit freundlichen Grüßen\nJonas Weber", "PERSON", "Jonas Weber"),
    ("person-de-particle", "Die Rede von Ursula von der Leyen war kurz.", "PERSON", "Ursula von der Leyen"),
    ("person-en-full-name", "Please add Sarah Connor to the distribution list.", "PERSON", "Sarah Connor"),
    ("person-en-honorific", "Dear Mr. O'Neill, thank you for your letter.", "PERSON", "O'Neill"),
    ("person-en-greeting", "Hi Dimitrios, could you check the slides?", "PERSON", "Dimitrios"),
    # dates (weak signal)
    ("date-de-numeric", "Der Vertrag endet am 31.12.2025.", "DATE_TIME", "31.12.2025"),
    ("date-de-written", "geboren am 3. März 1980 in Kiel", "DATE_TIME", "3. März 1980"),
    ("date-en-written", "The contract ends on January 7, 2026.", "DATE_TIME", "January 7, 2026"),
    ("date-en-iso", "Deadline 2025-03-14 for all teams.", "DATE_TIME", "2025-03-14"),
    # German identifiers (Presidio's recognizers, enabled and tuned)
    ("de-tax-id", "Meine Steuer-ID lautet 20433218191.", "DE_TAX_ID", "20433218191"),
    ("de-tax-id-en", "The German tax ID 20433218191 is missing.", "DE_TAX_ID", "20433218191"),
    ("de-vat-id", "USt-IdNr. DE700133890 bitte angeben.", "DE_VAT_ID", "DE700133890"),
    ("de-health-insurance", "Versichertennummer A838637942 auf der Gesundheitskarte", "DE_HEALTH_INSURANCE", "A838637942"),
    ("de-health-insurance-en", "Her health insurance number A838637942 is invalid.", "DE_HEALTH_INSURANCE", "A838637942"),
    ("de-social-security", "Rentenversicherungsnummer 15070649C103 fehlt.", "DE_SOCIAL_SECURITY", "15070649C103"),
    ("de-id-card", "Personalausweis Nr. L01X00T44 liegt vor.", "DE_ID_CARD", "L01X00T44"),
    ("de-passport", "Reisepass F20400481 ist abgelaufen.", "DE_PASSPORT", "F20400481"),
    # organisation identifiers from org_identifiers.yaml
    ("org-customer-de", "Kundennummer KD-42351163 bitte prüfen.", "CUSTOMER_ID", "KD-42351163"),
    ("org-customer-en", "Customer KD-07816184 called twice.", "CUSTOMER_ID", "KD-07816184"),
    ("org-employee-de", "Personalnummer PN155942 wechselt die Abteilung.", "EMPLOYEE_ID", "PN155942"),
    ("org-project", "Status von PRJ-2024-0042?", "PROJECT_CODE", "PRJ-2024-0042"),
]


POSITIVE_BY_ID = {c[0]: c[1:] for c in POSITIVE}
TRAPS_BY_ID: dict[str, tuple[str, set[str]]] = {}


# Parametrised by case id only: pytest prints a failing test's arguments, and those must
# not be example values.
@pytest.mark.parametrize("case", list(POSITIVE_BY_ID))
def test_recognizer_finds(screen: Screen, case: str) -> None:
    text, entity, part = POSITIVE_BY_ID[case]
    expected = span_of(text, part)
    found = spans(screen(text), entity)
    assert expected in found


# (case id, text, entity types that must NOT be reported)
TRAPS: list[tuple[str, str, set[str]]] = [
    ("date-is-not-pii", "Die Sitzung ist am 12.03.2024 um 10 Uhr.", {"PERSON", "PHONE_NUMBER"}),
    ("order-number-de", "Die Bestellnummer 0171234567 wurde storniert.", {"PHONE_NUMBER"}),
    ("order-number-en", "Order number 2125550147 has been cancelled.", {"PHONE_NUMBER"}),
    ("article-and-serial", "Bitte prüfe Artikel 4711-0815 und die Seriennummer SN-2024-000123.", {"PHONE_NUMBER", "DE_TAX_ID", "CREDIT_CARD"}),
    ("version-number", "Version 10.2.3 was released last week.", {"DATE_TIME", "IP_ADDRESS"}),
    ("price", "Das kostet 1.299,00 € inkl. MwSt.", {"PHONE_NUMBER", "CREDIT_CARD"}),
    ("product-names-de", "Wir vergleichen das iPhone 15 Pro, den VW Golf und die Apple Watch Series 9.", {"PERSON"}),
    ("product-names-en", "The Porsche Taycan and the Dell Latitude 7440 arrived.", {"PERSON"}),
    ("brand-with-person-name", "Die Mercedes-Benz Group und die Robert Bosch Stiftung kooperieren.", {"PERSON"}),
    ("countries-de", "Der Umsatz in Deutschland, Frankreich und Georgien stieg.", {"PERSON", "STREET_ADDRESS"}),
    ("countries-en", "Jordan, Chad and Israel are mentioned in the risk report.", {"PERSON"}),
    ("cities-en", "Ford and General Motors reported strong sales in Georgia and Virginia.", {"PERSON"}),
    ("month-and-modal", "Will you send the report before May?", {"PERSON"}),
    ("street-without-number", "Unsere Filiale in der Bahnhofstraße hat samstags geöffnet.", {"STREET_ADDRESS"}),
    ("article-before-street-word", "Die Straße 12 Jahre lang gesperrt.", {"STREET_ADDRESS"}),
    ("greeting-collective", "Hallo Team, liebe Grüße!", {"PERSON"}),
    ("firm-of-surnames", "Die Kanzlei Edwards, Martin and Miller vertritt uns.", {"PERSON"}),
    ("placeholder-name-allowlisted", "Im Formular steht Max Mustermann als Beispiel.", {"PERSON"}),
    ("loopback-ip-allowlisted", "Der Dienst lauscht auf 127.0.0.1 Port 8080.", {"IP_ADDRESS"}),
    ("postcode-alone-is-weak", "Liefergebiet PLZ 10115 und Umgebung.", {"STREET_ADDRESS", "PERSON"}),
]


TRAPS_BY_ID.update({c[0]: c[1:] for c in TRAPS})


@pytest.mark.parametrize("case", [c[0] for c in TRAPS])
def test_false_positive_traps(screen: Screen, case: str) -> None:
    text, forbidden = TRAPS_BY_ID[case]
    found = types(screen(text)) & forbidden
    assert found == set()


def test_invalid_checksums_are_dropped(screen: Screen) -> None:
    # Same shapes as valid identifiers, wrong check digits.
    screening = screen("Steuer-ID 20433218192, Karte 4111 1111 1111 1112, IBAN DE89 3704 0044 0532 0130 01, Kunde KD-42351164")
    assert types(screening) & {"DE_TAX_ID", "CREDIT_CARD", "IBAN_CODE", "CUSTOMER_ID"} == set()


def test_identifiers_counted_per_type(screen: Screen) -> None:
    screening = screen("Mails an a.b@example.de, c.d@example.de und e.f@example.com; Tel. 030 12345678")
    counts = {e.type: e.count for e in screening.decision.entities}
    assert counts == {"EMAIL_ADDRESS": 3, "PHONE_NUMBER": 1}


def test_context_word_lifts_a_lone_first_name(screen: Screen) -> None:
    plain = screen("Anna")
    with_context = screen("Die Kollegin Anna übernimmt.")
    assert spans(plain, "PERSON") == []
    assert len(spans(with_context, "PERSON")) == 1


def test_overlapping_findings_are_resolved(screen: Screen) -> None:
    # The postcode inside an address and the domain inside an e-mail are not counted twice.
    text = "Anschrift: Musterstraße 12, 10115 Berlin; Mail info@musterfirma.de"
    screening = screen(text)
    expected = [span_of(text, "Musterstraße 12, 10115 Berlin")]
    found = spans(screening, "STREET_ADDRESS")
    assert "DE_PLZ" not in types(screening)
    assert "URL" not in types(screening)
    assert found == expected
