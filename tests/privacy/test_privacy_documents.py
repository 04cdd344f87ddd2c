"""Realistic multi-line documents written for these tests: every identifier must be gone."""

from __future__ import annotations

import pytest

CLINICAL = """DISCHARGE SUMMARY
Patient: Margaret O'Halloran    MRN: 00739184    DOB: 02/11/1931
Admitted: 03/02/2024  Discharged: 03/09/2024
Attending: Dr. Venkat Raghunathan (NPI 1234567893)
Mrs. O'Halloran is a 93-year-old woman admitted with community-acquired pneumonia.
Her daughter, Fiona O'Halloran, can be reached at (503) 555-0142 or fiona.oh@fastmail.com.
Home address: 4417 Alder Creek Road, Portland, OR 97219.
Medicare ID 1EG4TE5MK73. Follow up with O'Halloran's GP in two weeks.
"""
BANK = """Dear Mr. Desmond Achterberg,

We write about your current account number 40071822 (sort code 20-00-00) and the card
ending 4111 1111 1111 1111, expiry 09/27. Payments to IBAN DE89 3704 0044 0532 0130 00 were
returned. Our routing number is 021000021 and SWIFT code DEUTDEFF.

Please call us on +44 20 7946 0958 quoting reference CX-4471920.

Yours sincerely,
Priya Raman
Customer Care, Northbank
"""
CLAIM = """Claim number: CLM-2023-448102
Policy number: AUT-99812734
Insured: Tomasz Wierzbicki, 88 Birchwood Lane, Apt 4B, Springfield, IL 62704
Vehicle: 2019 Honda Civic, VIN 1HGCM82633A004352, licence plate 7ABC123
Incident date: July 14, 2023. Third party: Alejandra Fuentes, phone 217-555-0187.
"""
CHAT = """user: hi, I'm Oluwaseun Adeyemi and my card got blocked
assistant: Sorry to hear that. Can you confirm the email on the account?
user: sure it's seun.adeyemi@gmail.com and my SSN is 219-09-9999
assistant: Thanks Oluwaseun. I see the card 5500 0000 0000 0004.
user: also my CVV is 123 and my password: Tr0ub4dor&3 if you need it
"""

CASES = [
    (CLINICAL, ["Margaret", "O'Halloran", "00739184", "02/11/1931", "03/02/2024", "Venkat", "Raghunathan",
                "1234567893", "93", "Fiona", "555-0142", "fiona.oh@fastmail.com", "4417 Alder Creek",
                "97219", "1EG4TE5MK73"]),
    (BANK, ["Desmond", "Achterberg", "40071822", "1111 1111 1111", "09/27", "DE89 3704", "021000021",
            "DEUTDEFF", "7946 0958", "CX-4471920", "Priya", "Raman"]),
    (CLAIM, ["CLM-2023-448102", "AUT-99812734", "Tomasz", "Wierzbicki", "88 Birchwood", "62704",
             "1HGCM82633A004352", "7ABC123", "July 14", "Alejandra", "Fuentes", "555-0187"]),
    (CHAT, ["Oluwaseun", "Adeyemi", "seun.adeyemi@gmail.com", "219-09-9999", "5500 0000 0000", "CVV is 123",
            "Tr0ub4dor&3"]),
]


@pytest.mark.parametrize("doc,secrets", CASES, ids=["clinical", "bank", "claim", "chat"])
def test_every_identifier_removed(hipaa, doc, secrets):
    out = hipaa.deidentify_text(doc).text
    left = [s for s in secrets if s in out]
    assert not left, (left, out)
