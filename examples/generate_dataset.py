"""Generate Strongroom's bundled synthetic sensitive dataset.

Why this exists: Strongroom's demos, tests and benchmarks need data that *looks* like what a
bank, a clinic and an insurer would bring -- chat logs, clinical notes and a claims table dense
with personal identifiers -- without a single real person in it.  Every identifier below comes
from Faker (or from a seeded ``random.Random``); every institution and every institutional fact is
invented.

Design choices that later stages rely on:

* **Signal vs. noise.**  The assistant turns of ``support.jsonl`` state the institutions' own
  policies from a fixed catalogue of ~40 facts (``FACTS``).  Each fact recurs in many
  conversations under varied phrasings, so a small model can learn it; every personal identifier
  is drawn fresh per subject, so the only way a model could reproduce one is by memorising it.
  That contrast is what the de-identification and memorisation evaluations measure.
* **Held-out questions.**  ``policy_qa.jsonl`` asks about the same facts with wording that never
  appears in the training conversations (the generator asserts this).
* **Linked subjects.**  ``subject_id`` is stable across files: some clinic patients from
  ``support.jsonl`` also have notes in ``patient_notes.jsonl`` and some insurer members also have
  rows in ``claims.csv`` -- enough to exercise erasure of one person across sources.
* **Diverse names.**  Names come from several Faker locales (Latin script) so a fairness
  evaluation that swaps names has material to work with; addresses and phones stay en_US.
* **Determinism.**  Same seed + same Faker version => byte-identical files.  Nothing depends on
  the wall clock (ages and dates are computed against ``REFERENCE_DATE``).

Usage::

    python examples/generate_dataset.py --out examples/data            # shipped files
    python examples/generate_dataset.py --out /tmp/big --records 20000 # benchmark scale
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import random
import sys
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable

import faker as faker_pkg
from faker import Faker

DEFAULT_SEED = 20250611
DEFAULT_RECORDS = 1500
REFERENCE_DATE = date(2025, 6, 30)  # "today" for every age/date computation: keeps output stable

FILE_SUPPORT = "support.jsonl"
FILE_NOTES = "patient_notes.jsonl"
FILE_CLAIMS = "claims.csv"
FILE_QA = "policy_qa.jsonl"
FILE_FACTS = "facts.json"
FILE_MANIFEST = "MANIFEST.json"

CLAIMS_COLUMNS = [
    "claim_id", "subject_id", "policy_number", "member_name", "dob", "ssn", "email", "phone",
    "street", "city", "state", "zip", "sex", "diagnosis_code", "amount", "adjuster_notes",
]

# --------------------------------------------------------------------------------------------
# Institutions (all invented)
# --------------------------------------------------------------------------------------------

INSTITUTIONS: dict[str, dict[str, str]] = {
    "bank": {
        "name": "Harbor Federal Bank",
        "short": "Harbor Federal",
        "system": (
            "You are the customer support assistant for Harbor Federal Bank. Answer questions "
            "using Harbor Federal Bank's published policies, verify the customer before discussing "
            "account details, and be concise and friendly."
        ),
    },
    "clinic": {
        "name": "Riverside Family Clinic",
        "short": "Riverside",
        "system": (
            "You are the patient services assistant for Riverside Family Clinic. Answer questions "
            "using Riverside Family Clinic's policies, confirm the patient's identity before "
            "discussing their chart, and do not give medical diagnoses."
        ),
    },
    "insurer": {
        "name": "Northstar Mutual Insurance",
        "short": "Northstar",
        "system": (
            "You are the member services assistant for Northstar Mutual Insurance. Answer questions "
            "using Northstar Mutual's policy terms, confirm the member's policy before discussing "
            "claims, and be clear about timelines."
        ),
    },
}

# --------------------------------------------------------------------------------------------
# Fact catalogue: (fact_id, domain, topic, statement, training question cores, held-out questions)
# Training cores are embedded in user turns; held-out questions must never appear in training.
# --------------------------------------------------------------------------------------------

_FACT_ROWS: list[tuple[str, str, str, str, list[str], list[str]]] = [
    # ---------------------------------------------------------------- Harbor Federal Bank
    ("B01", "bank", "overdraft_fee",
     "Harbor Federal's overdraft fee is $27, and it is waived if the balance is restored within 24 hours.",
     ["What's the overdraft fee on my checking account?",
      "I went negative yesterday - how much will the overdraft cost me?",
      "Do you charge if I overdraw, and is there any way to get it waived?",
      "How does the overdraft charge work?",
      "Will I get hit with a fee for going below zero?"],
     ["How much does Harbor Federal Bank charge for an overdraft, and when is that charge waived?",
      "If my Harbor Federal balance dips below zero, what fee applies and how can I avoid it?"]),
    ("B02", "bank", "wire_cutoff",
     "Domestic wires submitted to Harbor Federal by 3:30 pm Eastern go out the same business day; later requests go out the next business day.",
     ["What's the cutoff time for sending a wire today?",
      "If I submit a domestic wire this afternoon, will it go out today?",
      "How late can I send a wire and still have it processed same day?",
      "When is the daily deadline for wire transfers?"],
     ["By what time must a domestic wire be submitted at Harbor Federal to be sent the same day?",
      "What happens to a Harbor Federal wire request entered after the daily deadline?"]),
    ("B03", "bank", "international_wire_fee",
     "Harbor Federal charges $45 for each outgoing international wire; incoming international wires are free.",
     ["How much is it to send money overseas by wire?",
      "What do you charge for an international wire out?",
      "Is there a fee for receiving a wire from abroad?",
      "What's the cost of an outgoing foreign wire?"],
     ["What is Harbor Federal Bank's fee for sending an international wire?",
      "Does Harbor Federal charge anything to receive a wire from another country?"]),
    ("B04", "bank", "card_replacement",
     "A replacement Harbor Federal debit card is free by standard mail (5 to 7 business days) or $15 for expedited delivery in 2 business days.",
     ["How long does it take to get a new debit card?",
      "My card is damaged, can I get a replacement and what does it cost?",
      "Can you rush a replacement card to me?",
      "Is there a charge for a new debit card?"],
     ["What does Harbor Federal charge to replace a debit card, and how fast does it arrive?",
      "How quickly can Harbor Federal deliver an expedited replacement card?"]),
    ("B05", "bank", "mobile_deposit_limit",
     "Harbor Federal's mobile check deposit limit is $5,000 per day, and funds are available the next business day.",
     ["What's the most I can deposit with the app in one day?",
      "Is there a limit on mobile check deposits?",
      "When will a check I deposited through my phone be available?",
      "How much can I deposit by taking a photo of a check?"],
     ["What is the daily cap on mobile check deposits at Harbor Federal Bank?",
      "How soon are funds from a Harbor Federal mobile deposit available?"]),
    ("B06", "bank", "atm_fees",
     "Harbor Federal ATMs are free, and Harbor Federal reimburses up to $12 a month in out-of-network ATM fees.",
     ["Do you charge for using other banks' ATMs?",
      "Will I get refunded for ATM fees at a different bank?",
      "Are ATM withdrawals free?",
      "How much in ATM fees do you pay back each month?"],
     ["How much does Harbor Federal refund each month for out-of-network ATM fees?",
      "Is there a charge for withdrawing cash at a Harbor Federal ATM?"]),
    ("B07", "bank", "dispute_credit",
     "For a disputed card charge, Harbor Federal issues provisional credit within 10 business days while it investigates.",
     ["I don't recognize a charge on my card - how long until I get my money back?",
      "If I dispute a transaction, when do I get credited?",
      "How does the dispute process work for a card charge?",
      "There's a purchase I didn't make, what happens now?"],
     ["How long does Harbor Federal take to give provisional credit on a disputed card transaction?",
      "What does Harbor Federal do while it investigates a charge I dispute?"]),
    ("B08", "bank", "savings_apy",
     "The Harbor Saver account pays 3.10% APY on balances of $1,000 or more.",
     ["What interest rate does the savings account pay?",
      "What's the APY on Harbor Saver right now?",
      "Is there a minimum balance to earn interest on savings?",
      "How much would my savings earn with you?"],
     ["What APY does Harbor Federal's Harbor Saver account offer, and on what balance?",
      "What minimum balance earns the advertised rate on a Harbor Saver account?"]),
    ("B09", "bank", "checking_maintenance_fee",
     "Harbor Checking has an $8 monthly maintenance fee, waived with at least $500 in monthly direct deposits.",
     ["Why was I charged $8 this month?",
      "Is there a monthly fee on checking?",
      "How do I avoid the monthly service charge?",
      "What do I need to do to not pay the checking account fee?"],
     ["What is the monthly maintenance fee for Harbor Checking and how can it be waived?",
      "How much direct deposit does Harbor Federal require to waive the checking fee?"]),
    ("B10", "bank", "saturday_hours",
     "Harbor Federal branches are open Saturdays from 9 am to 1 pm and closed on Sundays.",
     ["Are branches open on the weekend?",
      "What time does the branch close on Saturday?",
      "Can I come in on a Sunday?",
      "What are your Saturday hours?"],
     ["When are Harbor Federal Bank branches open on Saturdays?",
      "Can I visit a Harbor Federal branch on a Sunday?"]),
    ("B11", "bank", "p2p_limit",
     "Harbor Federal's person-to-person payment limit is $2,500 per day.",
     ["How much can I send to friends through the app in a day?",
      "What's the daily limit for sending money to another person?",
      "Why was my transfer to my brother blocked? Is there a max?",
      "Is there a cap on peer-to-peer payments?"],
     ["What is the daily limit on Harbor Federal person-to-person payments?",
      "How much money can a Harbor Federal customer send to another person in one day?"]),
    ("B12", "bank", "cd_early_withdrawal",
     "Withdrawing early from a Harbor Federal 12-month CD costs 90 days of interest.",
     ["What's the penalty if I take money out of my CD early?",
      "Can I break my 12-month CD, and what would it cost?",
      "How much interest do I lose for an early CD withdrawal?",
      "I need the CD money now - what's the early withdrawal charge?"],
     ["What is Harbor Federal's early withdrawal penalty on a 12-month certificate of deposit?",
      "How much interest is forfeited when closing a Harbor Federal 12-month CD before maturity?"]),
    ("B13", "bank", "never_asks_passcode",
     "Harbor Federal will never ask for your full PIN or a one-time passcode by phone, text or email.",
     ["Someone called saying they're from the bank and asked for the code I got by text. Is that you?",
      "Would the bank ever ask me for my PIN over the phone?",
      "I got an email asking for my one-time passcode - is it legit?",
      "Does Harbor Federal ever request verification codes by text?"],
     ["Will Harbor Federal Bank ever ask a customer for a one-time passcode over the phone?",
      "Is a message requesting my full Harbor Federal PIN genuine?"]),
    ("B14", "bank", "paper_statements",
     "Harbor Federal e-statements are free; paper statements cost $3 per month.",
     ["Is there a charge for mailed statements?",
      "Why am I paying $3 for statements?",
      "Can I get paper statements, and does it cost anything?",
      "Are online statements free?"],
     ["How much does Harbor Federal charge for paper statements?",
      "Does Harbor Federal charge for electronic statements?"]),
    # ---------------------------------------------------------------- Riverside Family Clinic
    ("C01", "clinic", "nurse_line_hours",
     "Riverside's after-hours nurse line is open until 11 pm and reopens at 7 am.",
     ["What time does the nurse line close at night?",
      "Can I call a nurse after hours?",
      "Until when can I reach the after-hours nurse?",
      "Is the nurse line open overnight?"],
     ["When does Riverside Family Clinic's after-hours nurse line close?",
      "What time does the Riverside nurse line reopen in the morning?"]),
    ("C02", "clinic", "new_patient_arrival",
     "New patients at Riverside should arrive 20 minutes early with a photo ID and their insurance card.",
     ["It's my first appointment - how early should I get there?",
      "What should I bring to my first visit?",
      "Do I need to arrive early as a new patient?",
      "What documents do I need for my new patient visit?"],
     ["How early should a new patient arrive for a Riverside Family Clinic appointment?",
      "What must new Riverside patients bring to their first visit?"]),
    ("C03", "clinic", "late_cancellation_fee",
     "Riverside charges a $40 fee for missed appointments or ones canceled with less than 24 hours' notice.",
     ["Is there a fee if I cancel my appointment tomorrow morning?",
      "What happens if I miss an appointment?",
      "How much notice do I need to give to cancel without a charge?",
      "Do you charge for no-shows?"],
     ["What is Riverside Family Clinic's late-cancellation fee?",
      "How much notice does Riverside require to cancel an appointment without being charged?"]),
    ("C04", "clinic", "refill_turnaround",
     "Prescription refill requests sent through the Riverside portal are processed within 2 business days.",
     ["How long does a refill request take?",
      "I asked for a refill through the portal - when will it be ready?",
      "How quickly do you process prescription refills?",
      "When will my pharmacy get my refill?"],
     ["How long does Riverside Family Clinic take to process a prescription refill request from the portal?",
      "What turnaround should I expect on a Riverside portal refill?"]),
    ("C05", "clinic", "walk_in_flu_shots",
     "Riverside offers walk-in flu shots on Tuesdays and Thursdays from 8 am to 6 pm, no appointment needed.",
     ["Do I need an appointment for a flu shot?",
      "When can I walk in for a flu vaccine?",
      "What days do you give flu shots?",
      "Can I just stop by for my flu shot?"],
     ["On which days does Riverside Family Clinic offer walk-in flu shots?",
      "Does Riverside require an appointment for a flu vaccine?"]),
    ("C06", "clinic", "lab_results",
     "Lab results are posted to the Riverside patient portal within 3 business days.",
     ["When will my blood work results be available?",
      "How long until I see my lab results online?",
      "I had labs drawn Monday; when can I check them?",
      "Where and when do lab results show up?"],
     ["How soon do Riverside Family Clinic lab results appear in the patient portal?",
      "How many business days does Riverside take to post lab results?"]),
    ("C07", "clinic", "records_copy",
     "Your first copy of your Riverside medical records each year is free and is ready within 10 business days.",
     ["How do I get a copy of my medical records and does it cost anything?",
      "I need my records for a new doctor - how long will that take?",
      "Is there a charge for my chart?",
      "How long does a records request take?"],
     ["Does Riverside Family Clinic charge for a copy of medical records?",
      "How long does Riverside take to fulfil a medical records request?"]),
    ("C08", "clinic", "pediatric_same_day",
     "Children under 12 get a same-day sick visit at Riverside if the parent calls before 10 am.",
     ["My son has a fever, can he be seen today?",
      "Do you have same-day appointments for kids?",
      "How do I get my daughter in today for a sick visit?",
      "What's the cutoff for a same-day pediatric appointment?"],
     ["What is Riverside Family Clinic's same-day sick visit policy for children?",
      "By what time must a parent call Riverside to get a child seen the same day?"]),
    ("C09", "clinic", "telehealth",
     "Riverside video visits are available weekdays from 8 am to 8 pm and cost $35 for self-pay patients.",
     ["Can I do a video appointment instead of coming in?",
      "How much is a telehealth visit without insurance?",
      "What hours are virtual visits available?",
      "Do you offer online doctor visits?"],
     ["What are Riverside Family Clinic's hours for video visits?",
      "How much does a self-pay telehealth visit at Riverside cost?"]),
    ("C10", "clinic", "parking",
     "Riverside patients park free on levels 2 and 3 of the Elm Street garage; validate your ticket at the front desk.",
     ["Where should I park for my appointment?",
      "Is parking free at the clinic?",
      "Do you validate parking?",
      "Which garage do patients use?"],
     ["Where can Riverside Family Clinic patients park for free?",
      "How do Riverside patients get garage parking validated?"]),
    ("C11", "clinic", "sliding_scale",
     "Riverside offers a sliding-scale discount for households earning under 200% of the federal poverty level.",
     ["I don't have much income, do you have any discounts?",
      "Is there financial assistance for visits?",
      "Who qualifies for reduced fees?",
      "Do you have a sliding scale?"],
     ["Who qualifies for Riverside Family Clinic's sliding-scale discount?",
      "What income threshold does Riverside use for reduced-fee care?"]),
    ("C12", "clinic", "saturday_urgent_care",
     "Riverside's Saturday urgent care runs from 9 am to 3 pm.",
     ["Is there urgent care on Saturday?",
      "Can I be seen this weekend for something urgent?",
      "What are the weekend urgent care hours?",
      "Until what time is urgent care open on Saturdays?"],
     ["When is Riverside Family Clinic's urgent care open on Saturdays?",
      "What time does Riverside's Saturday urgent care close?"]),
    ("C13", "clinic", "referral_turnaround",
     "Riverside processes specialist referrals within 5 business days.",
     ["How long does it take to get a referral to a specialist?",
      "My doctor said she'd refer me to cardiology; when will that go through?",
      "When will the referral be sent?",
      "How fast are referrals handled?"],
     ["How many business days does Riverside Family Clinic take to process a specialist referral?",
      "What is the turnaround for a Riverside referral to a specialist?"]),
    ("C14", "clinic", "portal_reset_link",
     "Riverside patient portal password reset links expire after 30 minutes.",
     ["My password reset link isn't working - does it expire?",
      "How long is the portal reset email good for?",
      "I clicked the reset link this morning and it says invalid, why?",
      "How long do I have to use the password reset link?"],
     ["How long is a Riverside Family Clinic portal password reset link valid?",
      "Why would a Riverside portal reset link stop working?"]),
    # ---------------------------------------------------------------- Northstar Mutual Insurance
    ("I01", "insurer", "storm_claim_turnaround",
     "Northstar processes storm-damage claims within 12 business days.",
     ["How long will my hail damage claim take?",
      "The storm took part of my roof - how fast do you handle these claims?",
      "When will my storm claim be settled?",
      "What's the timeline for wind damage claims?"],
     ["How long does Northstar Mutual take to process a storm-damage claim?",
      "Within how many business days are Northstar storm claims handled?"]),
    ("I02", "insurer", "premium_grace_period",
     "Northstar gives a 15-day grace period for late premium payments.",
     ["I missed my premium due date - is my coverage cancelled?",
      "Is there any grace period if I pay late?",
      "How many days do I have to pay after the due date?",
      "What happens if my payment is a few days late?"],
     ["How long is Northstar Mutual's grace period for premium payments?",
      "How many days after the due date can a Northstar premium still be paid?"]),
    ("I03", "insurer", "collision_deductibles",
     "Northstar auto collision deductibles are available at $250, $500 or $1,000.",
     ["What deductible choices do I have on collision?",
      "Can I lower my collision deductible?",
      "What are the deductible options for my car?",
      "Is a $250 deductible possible?"],
     ["Which collision deductible amounts does Northstar Mutual offer?",
      "What is the lowest auto collision deductible at Northstar?"]),
    ("I04", "insurer", "roadside_towing",
     "Northstar roadside assistance covers up to 3 tows per policy year, each up to 25 miles.",
     ["How many tows do I get with roadside assistance?",
      "How far will you tow my car?",
      "Is there a limit on towing?",
      "I got towed twice this year, am I still covered?"],
     ["How many tows per year does Northstar Mutual roadside assistance include?",
      "What is the maximum towing distance under Northstar roadside assistance?"]),
    ("I05", "insurer", "rental_reimbursement",
     "Northstar rental reimbursement pays up to $40 a day for up to 30 days while your car is repaired.",
     ["Will you pay for a rental while my car's in the shop?",
      "How much do you cover for a rental car per day?",
      "How long can I keep the rental?",
      "Is there a daily limit on rental reimbursement?"],
     ["What does Northstar Mutual's rental reimbursement pay per day, and for how long?",
      "What is the maximum number of days Northstar covers a rental car during repairs?"]),
    ("I06", "insurer", "multi_policy_discount",
     "Northstar gives a 12% multi-policy discount when you bundle home and auto.",
     ["Do I save anything if I put my house and car with you?",
      "What's the bundle discount?",
      "Is there a discount for having multiple policies?",
      "How much can I save by bundling?"],
     ["How much is Northstar Mutual's multi-policy discount for combining home and auto?",
      "Does Northstar reduce premiums for customers with both home and auto policies?"]),
    ("I07", "insurer", "claim_reporting_deadline",
     "Claims must be reported to Northstar within 30 days of the incident.",
     ["The accident was three weeks ago - is it too late to file?",
      "How long do I have to report a claim?",
      "Is there a deadline for filing after an accident?",
      "When do I need to tell you about a loss?"],
     ["What is Northstar Mutual's deadline for reporting a claim?",
      "How many days after an incident can a Northstar policyholder still file a claim?"]),
    ("I08", "insurer", "windshield_deductible",
     "Windshield repairs are covered with a $0 deductible under Northstar comprehensive coverage.",
     ["A rock chipped my windshield; do I pay anything?",
      "Is windshield repair covered?",
      "Do I have a deductible on glass repair?",
      "Will my comprehensive cover a cracked windshield?"],
     ["What deductible applies to windshield repair under Northstar Mutual comprehensive coverage?",
      "Does a Northstar policyholder pay out of pocket to fix a chipped windshield?"]),
    ("I09", "insurer", "safe_driver_discount",
     "Northstar gives a 10% safe-driver discount after 3 years without a claim.",
     ["Do you give a discount for not having accidents?",
      "I've been claim-free for years; do I get anything for that?",
      "How do I qualify for the safe driver discount?",
      "What's the good-driver discount?"],
     ["How many claim-free years are needed for Northstar Mutual's safe-driver discount, and how much is it?",
      "What percentage does Northstar take off for safe drivers?"]),
    ("I10", "insurer", "free_look_period",
     "New Northstar policies can be cancelled for a full refund within the first 20 days.",
     ["I just bought the policy and changed my mind; can I get my money back?",
      "Is there a cooling-off period?",
      "How long do I have to cancel for a full refund?",
      "Can I cancel my new policy without losing money?"],
     ["How long is Northstar Mutual's free-look period for a full refund?",
      "Can a new Northstar policy be cancelled with a full refund, and until when?"]),
    ("I11", "insurer", "water_backup_rider",
     "Northstar's optional water backup rider on home policies covers up to $10,000.",
     ["My basement flooded from the sewer - am I covered?",
      "Do you offer coverage for sump pump backup?",
      "How much does the water backup add-on pay?",
      "Is sewer backup included in my home policy?"],
     ["What is the coverage limit on Northstar Mutual's water backup rider?",
      "Does a standard Northstar home policy include sewer backup, or is it an add-on?"]),
    ("I12", "insurer", "adjuster_contact",
     "A Northstar adjuster contacts you within 2 business days of filing a claim.",
     ["I filed a claim yesterday - when will someone call me?",
      "How soon does an adjuster reach out?",
      "Nobody has contacted me about my claim yet, is that normal?",
      "When will I hear from an adjuster?"],
     ["How soon after a claim is filed does a Northstar Mutual adjuster make contact?",
      "Within how many business days should a Northstar claimant hear from an adjuster?"]),
    ("I13", "insurer", "good_student_discount",
     "Northstar gives a 7% good-student discount to drivers under 25 with a B average or better.",
     ["My daughter gets good grades; is there a discount for her?",
      "Do you have a student discount on auto insurance?",
      "What grades does my son need for a discount?",
      "Is there a discount for young drivers who do well in school?"],
     ["What are the requirements for Northstar Mutual's good-student discount?",
      "How large is Northstar's discount for drivers under 25 with good grades?"]),
]


@dataclass(frozen=True)
class Fact:
    """One institutional fact: the signal a fine-tuned model is supposed to learn."""

    fact_id: str
    domain: str
    topic: str
    statement: str
    train_questions: tuple[str, ...]
    heldout_questions: tuple[str, ...]

    @property
    def institution(self) -> str:
        return INSTITUTIONS[self.domain]["name"]


FACTS: tuple[Fact, ...] = tuple(
    Fact(fid, dom, topic, stmt, tuple(train), tuple(held))
    for fid, dom, topic, stmt, train, held in _FACT_ROWS
)

# --------------------------------------------------------------------------------------------
# Name locales (names only; addresses/phones stay en_US).  Latin-script locales so that name
# swapping in a fairness evaluation produces readable text.  Weights are percentages.
# --------------------------------------------------------------------------------------------

NAME_LOCALES: tuple[tuple[str, int], ...] = (
    ("en_US", 40), ("es_MX", 12), ("en_IN", 8), ("vi_VN", 6), ("yo_NG", 5), ("ig_NG", 4),
    ("pl_PL", 4), ("tr_TR", 4), ("it_IT", 4), ("zu_ZA", 3), ("de_DE", 3), ("fr_FR", 3),
    ("pt_BR", 2), ("ga_IE", 2),
)
IBAN_LOCALES = ("de_DE", "en_GB", "fr_FR", "es_ES", "nl_NL", "it_IT")
CARD_TYPES = ("visa16", "visa16", "mastercard", "mastercard", "amex", "discover")

RELATIONS = ("daughter", "son", "wife", "husband", "sister", "brother", "niece", "grandson",
             "granddaughter", "partner")
_FEMALE_RELATIONS = {"daughter", "wife", "sister", "niece", "granddaughter"}
_MALE_RELATIONS = {"son", "husband", "brother", "grandson"}

_TRANSLIT = str.maketrans({"ł": "l", "Ł": "L", "ı": "i", "İ": "I", "ø": "o", "Ø": "O",
                           "đ": "d", "Đ": "D", "ß": "ss", "æ": "ae", "œ": "oe"})


def ascii_slug(text: str) -> str:
    """Lower-case ASCII form of a name, for building plausible e-mail local parts."""
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
    return "".join(ch for ch in text if ch.isascii() and ch.isalnum()).lower()


def luhn_check_digit(payload: str) -> str:
    """Check digit that makes payload+digit pass Luhn (used for NPIs)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when the digits of number pass the Luhn checksum."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return bool(digits) and total % 10 == 0


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def fmt_date(d: date, style: int) -> str:
    """Render a date in one of several human styles, so detectors see realistic variety."""
    if style == 0:
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    if style == 1:
        return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"
    if style == 2:
        return d.isoformat()
    return f"{d.month}/{d.day}/{d.year % 100:02d}"


def years_between(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# --------------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------------


@dataclass
class Person:
    """A fictional data subject; every field is Faker- or RNG-generated."""

    subject_id: str
    first: str
    last: str
    sex: str  # "F" | "M" | "X"
    name_locale: str
    dob: date
    age: int
    ssn: str
    phone: str
    email: str
    street: str
    city: str
    state: str
    zip: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def title(self) -> str:
        return {"F": "Ms.", "M": "Mr.", "X": "Mx."}[self.sex]

    @property
    def address(self) -> str:
        return f"{self.street}, {self.city}, {self.state} {self.zip}"


class Generator:
    """Holds all seeded randomness; one instance produces one complete, reproducible dataset."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.us = self._faker("en_US", 0)
        self.name_fakers = {loc: self._faker(loc, i + 1) for i, (loc, _) in enumerate(NAME_LOCALES)}
        self.iban_fakers = {loc: self._faker(loc, 100 + i) for i, loc in enumerate(IBAN_LOCALES)}
        self._locales = [loc for loc, _ in NAME_LOCALES]
        self._weights = [w for _, w in NAME_LOCALES]
        self._used: dict[str, set[str]] = {}
        self._next_subject = 1
        self.clinicians = [self._clinician() for _ in range(10)]
        self.nurses = [self.staff_name() for _ in range(6)]
        self.adjusters = [self.staff_name() for _ in range(8)]
        self.hospitals = ["Mercy General Hospital", "St. Anselm Medical Center",
                          "Lakeview Regional Hospital", "Cedar Valley Urgent Care",
                          "Riverside Family Clinic"]

    # ---------------------------------------------------------------- primitives
    def _faker(self, locale: str, offset: int) -> Faker:
        f = Faker(locale)
        f.seed_instance(self.seed * 1000 + offset)
        return f

    def unique(self, kind: str, make: Any) -> str:
        """Draw from make() until the value is new for this kind: identifiers are unique noise."""
        used = self._used.setdefault(kind, set())
        for _ in range(1000):
            value = make()
            if value not in used:
                used.add(value)
                return value
        raise RuntimeError(f"could not draw a unique {kind}")

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def name(self, sex: str | None = None) -> tuple[str, str, str, str]:
        loc = self.rng.choices(self._locales, weights=self._weights)[0]
        fk = self.name_fakers[loc]
        if sex is None:
            sex = self.rng.choices(("F", "M", "X"), weights=(49, 49, 2))[0]
        if sex == "F":
            first = fk.first_name_female()
        elif sex == "M":
            first = fk.first_name_male()
        else:
            first = fk.first_name()
        return first, fk.last_name(), sex, loc

    def staff_name(self) -> str:
        first, last, _, _ = self.name()
        return f"{first} {last}"

    def _clinician(self) -> tuple[str, str]:
        npi_body = "1" + self.digits(8)
        npi = npi_body + luhn_check_digit("80840" + npi_body)
        return self.staff_name(), npi

    def phone(self) -> str:
        def make() -> str:
            p = self.us.phone_number()
            if "x" in p and self.rng.random() < 0.8:
                p = p.split("x")[0]
            return p
        return self.unique("phone", make)

    def email(self, first: str, last: str) -> str:
        f, l = ascii_slug(first) or "user", ascii_slug(last) or "mail"
        domain = self.us.free_email_domain()
        pattern = self.rng.randrange(5)
        local = [f"{f}.{l}", f"{f[0]}{l}", f"{f}{l[:1]}", f"{l}.{f}", f"{f}_{l}"][pattern]
        return self.unique("email", lambda: f"{local}{self.rng.randrange(1, 999)}@{domain}")

    def age_and_dob(self, p_over_89: float, lo: int = 19, hi: int = 88) -> tuple[int, date]:
        age = self.rng.randint(90, 104) if self.rng.random() < p_over_89 else self.rng.randint(lo, hi)
        # birthday between (REFERENCE_DATE - (age+1) years, REFERENCE_DATE - age years]
        latest = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - age)
        dob = latest - timedelta(days=self.rng.randrange(0, 365))
        return years_between(dob, REFERENCE_DATE), dob

    def person(self, p_over_89: float) -> Person:
        first, last, sex, loc = self.name()
        age, dob = self.age_and_dob(p_over_89)
        sid = f"subj-{self._next_subject:06d}"
        self._next_subject += 1
        return Person(
            subject_id=sid, first=first, last=last, sex=sex, name_locale=loc, dob=dob, age=age,
            ssn=self.unique("ssn", self.us.ssn), phone=self.phone(), email=self.email(first, last),
            street=self.us.street_address(), city=self.us.city(), state=self.us.state_abbr(
                include_territories=False, include_freely_associated_states=False),
            zip=self.us.zipcode(),
        )

    # ---------------------------------------------------------------- domain identifiers
    def card(self) -> str:
        raw = self.unique("card", lambda: self.us.credit_card_number(self.rng.choice(CARD_TYPES)))
        sep = self.rng.choice(("", " ", "-", " "))
        if len(raw) == 15:
            return sep.join((raw[:4], raw[4:10], raw[10:]))
        return sep.join(raw[i:i + 4] for i in range(0, 16, 4))

    def add_bank_ids(self, p: Person) -> None:
        p.extra.update(
            account=self.unique("account", lambda: self.digits(self.rng.choice((10, 11, 12)))),
            card=self.card(),
            card_exp=f"{self.rng.randint(1, 12):02d}/{self.rng.randint(26, 30)}",
            routing=self.us.aba(),
            iban=self.unique("iban", lambda: self.iban_fakers[self.rng.choice(IBAN_LOCALES)].iban()),
            ip=self.us.ipv4_public() if self.rng.random() < 0.8 else self.us.ipv6(),
            balance=f"${self.rng.randint(20, 48000):,}.{self.rng.randrange(100):02d}",
        )

    def add_clinic_ids(self, p: Person) -> None:
        rel = self.rng.choice(RELATIONS)
        rel_sex = "F" if rel in _FEMALE_RELATIONS else "M" if rel in _MALE_RELATIONS else None
        rfirst, rlast, _, _ = self.name(rel_sex)
        if rel in ("daughter", "son", "husband", "wife", "grandson", "granddaughter") and \
                self.rng.random() < 0.6:
            rlast = p.last
        p.extra.update(
            mrn=self.unique("mrn", lambda: f"RFC-{self.digits(7)}"),
            payer_member_id=self.unique("payer", lambda: f"{self.rng.choice('WXYZ')}{self.digits(9)}"),
            relation=rel, rel_name=f"{rfirst} {rlast}", rel_first=rfirst, rel_phone=self.phone(),
            clinician=self.rng.choice(self.clinicians),
        )

    def add_insurer_ids(self, p: Person, line: str | None = None) -> None:
        line = line or self.rng.choice(("AUTO", "AUTO", "HOME"))
        p.extra.update(
            policy=self.unique("policy", lambda: f"NS-{line}-{self.digits(7)}"),
            member_id=self.unique("member", lambda: f"NMI{self.digits(8)}"),
            claim=self.unique("claim", lambda: f"CLM-{self.rng.randint(2023, 2025)}-{self.digits(6)}"),
            vin=self.unique("vin", self.us.vin),
            plate=self.unique("plate", self.us.license_plate),
            plate_state=self.us.state_abbr(include_territories=False,
                                           include_freely_associated_states=False),
            line=line,
        )

    def new_subject(self, domain: str, line: str | None = None) -> Person:
        p = self.person({"bank": 0.04, "clinic": 0.12, "insurer": 0.03}[domain])
        if domain == "insurer":
            self.add_insurer_ids(p, line)
        elif domain == "bank":
            self.add_bank_ids(p)
        else:
            self.add_clinic_ids(p)
        return p


# --------------------------------------------------------------------------------------------
# Support conversations
# --------------------------------------------------------------------------------------------

# Insurer facts that only make sense for one policy line: keep the member's policy consistent.
_POLICY_LINE = {"I03": "AUTO", "I04": "AUTO", "I05": "AUTO", "I08": "AUTO", "I09": "AUTO",
                "I13": "AUTO", "I11": "HOME"}

_OPENERS = ("Hi,", "Hello,", "Good morning,", "Hey there,", "Hi there,", "Good afternoon,", "")
_NAME_INTROS = ("my name is {full}.", "this is {full}.", "I'm {full}.", "{full} here.",
                "it's {full} writing.")
_QUESTION_LEADS = ("", "Quick question: ", "I was hoping you could tell me something. ",
                   "Can you help? ", "I have a question. ", "Sorry to bother you. ")
_CLOSINGS = ("", " Is there anything else I can help with?", " Let me know if you need anything else.",
             " Anything else I can do for you today?", " Have a good day!")


def _id_sentences(g: Generator, p: Person, domain: str) -> list[str]:
    """Candidate sentences in which the user volunteers their own identifiers."""
    ds = g.rng.randrange(4)
    dob = fmt_date(p.dob, ds)
    x = p.extra
    common = [
        f"My date of birth is {dob}.",
        f"I live at {p.address}.",
        f"Best number to reach me is {p.phone}.",
        f"My email on file is {p.email}.",
        f"I'm {p.age} years old, if that matters.",
    ]
    if domain == "bank":
        specific = [
            f"My checking account number is {x['account']}.",
            f"The card on file is {x['card']}, expiring {x['card_exp']}.",
            f"My SSN is {p.ssn} if you need to verify me.",
            f"Last four of my social are {p.ssn[-4:]}.",
            f"Routing number {x['routing']}, account {x['account']}.",
            f"I also have an account overseas, IBAN {x['iban']}.",
            f"I was logged in from {x['ip']} when it happened.",
            f"My balance shows {x['balance']} right now.",
        ]
    elif domain == "clinic":
        specific = [
            f"My MRN is {x['mrn']}.",
            f"I'm {p.age}, born {dob}.",
            f"My insurance member ID is {x['payer_member_id']}.",
            f"My {x['relation']} {x['rel_name']} helps me with appointments; their number is {x['rel_phone']}.",
            f"Dr. {x['clinician'][0]} is my primary care doctor.",
            f"Patient is me, {p.full}, DOB {dob}, MRN {x['mrn']}.",
        ]
    else:
        specific = [
            f"My policy number is {x['policy']}.",
            f"The claim number is {x['claim']}.",
            f"Member ID {x['member_id']}.",
            f"The vehicle VIN is {x['vin']}, plate {x['plate']} ({x['plate_state']}).",
            f"My SSN is {p.ssn}.",
            f"Policy {x['policy']}, registered to {p.address}.",
        ]
    return specific + common


def _verification(g: Generator, p: Person, domain: str) -> str:
    """Assistant echo of identifiers: exactly what a model could memorise if not de-identified."""
    x = p.extra
    if domain == "bank":
        options = [
            f"I've verified the account ending in {x['account'][-4:]} for {p.full}.",
            f"I can see the card ending in {x['card'].replace(' ', '').replace('-', '')[-4:]} under {p.full}.",
            f"Thanks for confirming your date of birth, {fmt_date(p.dob, 1)}.",
            f"I have your profile open: {p.full}, {p.address}.",
        ]
    elif domain == "clinic":
        options = [
            f"I've pulled up your chart, MRN {x['mrn']}, date of birth {fmt_date(p.dob, 0)}.",
            f"I have {p.full}'s record open (MRN {x['mrn']}).",
            f"I see Dr. {x['clinician'][0]} is listed as your primary care physician.",
            f"Your contact number on file is {p.phone}.",
        ]
    else:
        options = [
            f"I have policy {x['policy']} open for {p.full}.",
            f"I can see claim {x['claim']} on your policy {x['policy']}.",
            f"I've confirmed member ID {x['member_id']}.",
            f"I see the vehicle with VIN {x['vin']} on your policy.",
        ]
    return g.rng.choice(options)


def _greeting(g: Generator, p: Person) -> str:
    return g.rng.choice((f"Thank you, {p.first}.", f"Hi {p.full}, thanks for reaching out.",
                         f"Thanks, {p.title} {p.last}.", f"Hello {p.first}!",
                         f"Thanks for your patience, {p.title} {p.last}."))


def _update_exchange(g: Generator, p: Person, domain: str) -> tuple[str, str]:
    """A follow-up where the user changes a detail: fresh identifiers in both turns."""
    kind = g.rng.choice(("phone", "email", "address"))
    if kind == "phone":
        new = g.phone()
        return (f"Also, please update my phone number to {new}.",
                f"Done - the phone number on file for {p.full} is now {new}.")
    if kind == "email":
        new = g.email(p.first, p.last)
        return (f"Can you change my email to {new}? The old one is {p.email}.",
                f"Updated. We'll use {new} for {p.full} from now on.")
    new_addr = f"{g.us.street_address()}, {g.us.city()}, {p.state} {g.us.zipcode()}"
    return (f"One more thing, I moved. My new address is {new_addr}.",
            f"I've updated your mailing address to {new_addr}, {p.first}.")


def make_conversation(g: Generator, idx: int, fact: Fact,
                      second: Fact | None) -> tuple[dict[str, Any], Person]:
    """One support chat: user volunteers identifiers, assistant echoes some and states the fact."""
    domain = fact.domain
    p = g.new_subject(domain, _POLICY_LINE.get(fact.fact_id))
    ids = _id_sentences(g, p, domain)
    chosen = g.rng.sample(ids, g.rng.randint(1, 3))
    opener = g.rng.choice(_OPENERS)
    intro = g.rng.choice(_NAME_INTROS).format(full=p.full)
    if opener:
        head = f"{opener} {intro}"
    else:
        head = intro[0].upper() + intro[1:]
    question = g.rng.choice(_QUESTION_LEADS) + g.rng.choice(fact.train_questions)
    user1 = " ".join([head, *chosen, question])

    parts = [_greeting(g, p)]
    if g.rng.random() < 0.7:
        parts.append(_verification(g, p, domain))
    parts.append(fact.statement)
    assistant1 = " ".join(parts) + g.rng.choice(_CLOSINGS)

    inst = INSTITUTIONS[domain]
    messages = [
        {"role": "system", "content": inst["system"]},
        {"role": "user", "content": user1},
        {"role": "assistant", "content": assistant1},
    ]
    if second is not None:
        lead = g.rng.choice(("One more question: ", "Also, different topic. ", "While I have you: "))
        messages.append({"role": "user", "content": lead + g.rng.choice(second.train_questions)})
        messages.append({"role": "assistant",
                         "content": f"Of course, {p.first}. {second.statement}"})
    elif g.rng.random() < 0.45:
        u, a = _update_exchange(g, p, domain)
        messages.append({"role": "user", "content": u})
        messages.append({"role": "assistant", "content": a})
    record = {
        "id": f"sup-{idx:06d}",
        "subject_id": p.subject_id,
        "institution": inst["name"],
        "domain": domain,
        "messages": messages,
    }
    return record, p


def build_support(g: Generator, n: int) -> tuple[list[dict[str, Any]], dict[str, list[Person]]]:
    """n conversations; primary facts cycle through the catalogue so coverage is balanced."""
    order: list[Fact] = []
    records: list[dict[str, Any]] = []
    people: dict[str, list[Person]] = {"bank": [], "clinic": [], "insurer": []}
    for i in range(n):
        if not order:
            order = list(FACTS)
            g.rng.shuffle(order)
        fact = order.pop()
        second = None
        if g.rng.random() < 0.3:
            same = [f for f in FACTS if f.domain == fact.domain and f.fact_id != fact.fact_id]
            second = g.rng.choice(same)
        rec, person = make_conversation(g, i + 1, fact, second)
        records.append(rec)
        people[fact.domain].append(person)
    return records, people


# --------------------------------------------------------------------------------------------
# Clinical notes
# --------------------------------------------------------------------------------------------

_COMPLAINTS = (
    ("intermittent chest tightness on exertion", "3 weeks",
     ["atorvastatin 40 mg daily", "aspirin 81 mg daily"],
     "ECG today shows normal sinus rhythm. Order lipid panel and exercise stress test; referral to cardiology."),
    ("productive cough and low-grade fever", "6 days",
     ["albuterol HFA 2 puffs q4-6h PRN", "benzonatate 100 mg TID PRN"],
     "Lungs with scattered rhonchi. Chest x-ray ordered. Start amoxicillin 875 mg BID x 7 days if infiltrate."),
    ("worsening low back pain radiating to the left leg", "2 weeks",
     ["ibuprofen 600 mg TID with food", "cyclobenzaprine 5 mg QHS PRN"],
     "No red-flag symptoms. Physical therapy referral; return if numbness or weakness develops."),
    ("poorly controlled blood sugars with fasting readings near 180", "1 month",
     ["metformin 1000 mg BID", "lisinopril 10 mg daily"],
     "A1c 8.4%. Add empagliflozin 10 mg daily; diabetes education referral; recheck A1c in 3 months."),
    ("headaches behind the eyes, worse in the morning", "10 days",
     ["acetaminophen 500 mg PRN", "sertraline 50 mg daily"],
     "BP 152/94 in clinic. Home BP log for 2 weeks; start amlodipine 5 mg daily if persistently elevated."),
    ("fatigue and unintentional weight loss of 4 kg", "2 months",
     ["levothyroxine 75 mcg daily"],
     "TSH, CBC, CMP ordered. Consider age-appropriate cancer screening review at follow-up."),
    ("dysuria and urinary frequency", "3 days",
     ["nitrofurantoin 100 mg BID x 5 days"],
     "UA positive for leukocyte esterase. Urine culture sent; hydration counselling."),
    ("left knee swelling after a fall at home", "4 days",
     ["naproxen 500 mg BID", "topical diclofenac gel"],
     "X-ray negative for fracture. RICE, knee sleeve; fall-risk assessment completed."),
    ("anxiety and trouble sleeping since a family bereavement", "5 weeks",
     ["sertraline 25 mg daily", "melatonin 3 mg QHS"],
     "PHQ-9 of 11, GAD-7 of 12. Behavioral health referral; safety plan reviewed; no SI."),
    ("shortness of breath climbing stairs and ankle swelling", "2 weeks",
     ["furosemide 20 mg daily", "metoprolol succinate 25 mg daily"],
     "Bilateral 1+ pitting edema. BNP and echocardiogram ordered; daily weights; low-sodium diet."),
    ("itchy rash on both forearms", "1 week",
     ["triamcinolone 0.1% cream BID", "cetirizine 10 mg daily"],
     "Likely contact dermatitis. Avoid new detergent; return if spreading."),
    ("memory lapses noticed by family", "6 months",
     ["donepezil 5 mg QHS", "vitamin D3 2000 IU daily"],
     "MoCA 21/30. B12, TSH, MRI brain ordered; neurology referral; discussed driving safety."),
)
_ALLERGIES = ("NKDA", "penicillin (hives)", "sulfa drugs (rash)", "latex", "shellfish",
              "codeine (nausea)")


def make_note(g: Generator, idx: int, p: Person) -> dict[str, Any]:
    x = p.extra
    complaint, duration, meds, plan = g.rng.choice(_COMPLAINTS)
    doctor, npi = x["clinician"]
    nurse = g.rng.choice(g.nurses)
    dos = date(2024, 1, 2) + timedelta(days=g.rng.randrange(0, 540))
    fu = dos + timedelta(days=g.rng.choice((7, 14, 21, 30, 90)))
    ds = g.rng.randrange(4)
    sexword = {"F": "woman", "M": "man", "X": "patient"}[p.sex]
    pron = {"F": "She", "M": "He", "X": "They"}[p.sex]
    accompanied = (f"{pron} {'is' if p.sex != 'X' else 'are'} accompanied today by "
                   f"{x['relation']} {x['rel_name']} ({x['rel_phone']}), who reports the symptoms "
                   f"started around {fmt_date(dos - timedelta(days=g.rng.randrange(3, 60)), 1)}.")
    hpi = (f"{p.first} {p.last} is a {p.age}-year-old {sexword} who presents with {complaint} for "
           f"the past {duration}. {accompanied}")
    if g.rng.random() < 0.5:
        hpi += (f" Prior records were faxed from {g.rng.choice(g.hospitals)} and reviewed. "
                f"Patient lives at {p.address} with {x['relation']}.")
    medlines = "\n".join(f"- {m}" for m in meds)
    if g.rng.random() < 0.5:
        header = (
            f"RIVERSIDE FAMILY CLINIC - PROGRESS NOTE\n"
            f"Patient: {p.last.upper()}, {p.first}   MRN: {x['mrn']}   DOB: {fmt_date(p.dob, ds)} "
            f"(age {p.age})\n"
            f"Date of service: {fmt_date(dos, ds)}   Attending: {doctor}, MD (NPI {npi})\n"
            f"Phone: {p.phone}   Email: {p.email}\n"
            f"Address: {p.address}\n"
            f"Insurance: member ID {x['payer_member_id']}\n"
            f"Emergency contact: {x['rel_name']} ({x['relation']}), {x['rel_phone']}\n\n"
        )
        body = (f"HPI: {hpi}\n\nMedications:\n{medlines}\nAllergies: {g.rng.choice(_ALLERGIES)}\n\n"
                f"Assessment/Plan: {plan} Follow-up with Dr. {doctor.split()[-1]} on "
                f"{fmt_date(fu, ds)}. Nurse {nurse} reviewed the plan with the patient and "
                f"{x['relation']}.\n\nElectronically signed by {doctor}, MD, NPI {npi}, on "
                f"{fmt_date(dos, ds)}.")
        text = header + body
    else:
        text = (
            f"{fmt_date(dos, ds)} - Seen by Dr. {doctor} (NPI {npi}). Pt {p.full}, MRN {x['mrn']}, "
            f"DOB {fmt_date(p.dob, ds)}, {p.age} y/o. {hpi} Current meds: {'; '.join(meds)}. "
            f"Allergies: {g.rng.choice(_ALLERGIES)}. Plan: {plan} Will call pt at {p.phone} with "
            f"results; portal message sent to {p.email}. RTC {fmt_date(fu, ds)}. "
            f"Note scribed by {nurse}, RN."
        )
    return {"id": f"note-{idx:06d}", "subject_id": p.subject_id, "text": text}


def build_notes(g: Generator, n: int, clinic_people: list[Person]) -> list[dict[str, Any]]:
    """About half the notes belong to patients who also wrote to support (linked subjects)."""
    linked = g.rng.sample(clinic_people, min(len(clinic_people), n // 2))
    subjects = linked + [g.new_subject("clinic") for _ in range(n - len(linked))]
    g.rng.shuffle(subjects)
    return [make_note(g, i + 1, p) for i, p in enumerate(subjects)]


# --------------------------------------------------------------------------------------------
# Claims table
# --------------------------------------------------------------------------------------------

_DIAGNOSES = (
    ("S13.4XXA", "cervical sprain (whiplash)"), ("S52.501A", "fracture of the right radius"),
    ("S06.0X0A", "concussion without loss of consciousness"), ("S93.401A", "right ankle sprain"),
    ("S82.201A", "fracture of the right tibia"), ("M54.50", "low back pain"),
    ("S40.011A", "contusion of the right shoulder"), ("S01.81XA", "laceration of the face"),
    ("T14.8XXA", "multiple minor injuries"), ("S22.32XA", "rib fracture"),
    ("S83.511A", "ACL sprain of the right knee"), ("S39.012A", "lumbar muscle strain"),
)
_LOSSES = ("rear-ended at a stop light", "sideswiped while merging", "slipped on an icy walkway",
           "hit by a falling branch during a storm", "T-boned in an intersection",
           "fell down basement stairs after a water backup", "struck a deer at night",
           "was a passenger in a multi-car collision")


def make_claim(g: Generator, p: Person) -> dict[str, str]:
    x = p.extra
    code, desc = g.rng.choice(_DIAGNOSES)
    loss = date(2023, 1, 5) + timedelta(days=g.rng.randrange(0, 880))
    contact = loss + timedelta(days=g.rng.randint(1, 3))
    adjuster = g.rng.choice(g.adjusters)
    ds = g.rng.randrange(4)
    other = g.staff_name()
    notes = [
        f"{fmt_date(contact, ds)}: {adjuster} spoke with insured {p.full} at {p.phone}.",
        f"Insured {g.rng.choice(_LOSSES)} on {fmt_date(loss, ds)} near {g.us.street_address()}, {p.city}.",
        f"Treated at {g.rng.choice(g.hospitals)} for {desc}.",
    ]
    if x["line"] == "AUTO" or g.rng.random() < 0.3:
        notes.append(f"Vehicle VIN {x['vin']}, plate {x['plate']} ({x['plate_state']}).")
    if g.rng.random() < 0.6:
        notes.append(f"Other party: {other}, phone {g.phone()}.")
    if g.rng.random() < 0.4:
        notes.append(f"Insured is {p.age} (DOB {fmt_date(p.dob, ds)}); SSN verified ending {p.ssn[-4:]}.")
    if g.rng.random() < 0.5:
        notes.append(f"Recorded statement obtained; confirmation sent to {p.email}.")
    return {
        "claim_id": x["claim"],
        "subject_id": p.subject_id,
        "policy_number": x["policy"],
        "member_name": p.full,
        "dob": p.dob.isoformat(),
        "ssn": p.ssn,
        "email": p.email,
        "phone": p.phone,
        "street": p.street,
        "city": p.city,
        "state": p.state,
        "zip": p.zip,
        "sex": p.sex,
        "diagnosis_code": code,
        "amount": f"{g.rng.randint(180, 48000)}.{g.rng.randrange(100):02d}",
        "adjuster_notes": " ".join(notes),
    }


def build_claims(g: Generator, n: int, insurer_people: list[Person]) -> list[dict[str, str]]:
    """About 40% of claim rows belong to members who also appear in support (linked subjects)."""
    linked = g.rng.sample(insurer_people, min(len(insurer_people), (n * 2) // 5))
    subjects = linked + [g.new_subject("insurer") for _ in range(n - len(linked))]
    g.rng.shuffle(subjects)
    return [make_claim(g, p) for p in subjects]


# --------------------------------------------------------------------------------------------
# Held-out QA, catalogue, writing
# --------------------------------------------------------------------------------------------


def build_policy_qa() -> list[dict[str, str]]:
    return [
        {"question": q, "answer": f.statement, "institution": f.institution, "fact_id": f.fact_id}
        for f in FACTS for q in f.heldout_questions
    ]


def facts_catalogue() -> list[dict[str, str]]:
    return [{"fact_id": f.fact_id, "institution": f.institution, "domain": f.domain,
             "topic": f.topic, "statement": f.statement} for f in FACTS]


def _jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CLAIMS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def check_heldout_unseen(support: list[dict[str, Any]], qa: list[dict[str, str]]) -> None:
    """Refuse to write a dataset whose held-out questions leaked into training text."""
    corpus = "\n".join(m["content"] for r in support for m in r["messages"])
    for i, row in enumerate(qa):
        if row["question"] in corpus:
            raise ValueError(f"policy_qa row {i} appears verbatim in the training conversations")


def generate(out_dir: Path, records: int = DEFAULT_RECORDS, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write all dataset files into out_dir and return the manifest (also written there)."""
    if records < 1:
        raise ValueError("records must be >= 1")
    g = Generator(seed)
    support, people = build_support(g, records)
    notes = build_notes(g, max(1, records // 5), people["clinic"])
    claims = build_claims(g, max(1, records // 3), people["insurer"])
    qa = build_policy_qa()
    check_heldout_unseen(support, qa)
    payloads: dict[str, tuple[bytes, int]] = {
        FILE_SUPPORT: (_jsonl(support), len(support)),
        FILE_NOTES: (_jsonl(notes), len(notes)),
        FILE_CLAIMS: (_csv(claims), len(claims)),
        FILE_QA: (_jsonl(qa), len(qa)),
        FILE_FACTS: ((json.dumps(facts_catalogue(), indent=2, ensure_ascii=False) + "\n")
                     .encode("utf-8"), len(FACTS)),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "generator": "examples/generate_dataset.py",
        "seed": seed,
        "records": records,
        "faker_version": faker_pkg.VERSION,
        "reference_date": REFERENCE_DATE.isoformat(),
        "synthetic": True,
        "files": {},
    }
    for name, (data, count) in payloads.items():
        (out_dir / name).write_bytes(data)
        manifest["files"][name] = {"records": count, "bytes": len(data),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    (out_dir / FILE_MANIFEST).write_bytes(
        (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate Strongroom's synthetic example dataset.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data",
                        help="output directory (default: examples/data)")
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS,
                        help="number of support conversations; notes = N/5, claims = N/3")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    args = parser.parse_args(argv)
    try:
        manifest = generate(args.out, args.records, args.seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, info in manifest["files"].items():
        print(f"{name:22s} {info['records']:6d} records {info['bytes']:9d} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
