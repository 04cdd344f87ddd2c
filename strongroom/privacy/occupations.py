"""Occupations: a job title next to a name or an employer narrows who someone is.

HIPAA's Safe Harbor list does not name occupation, but the expert-determination route and GDPR
treat it as a quasi-identifier ("the only midwife in Rjukan"), and the recall-first ``training``
policy removes it. Detection is a head-noun rule, not a list of full titles: an occupational head
word (engineer, clerk, technician, ...) with up to four modifiers before it on the same line
("Network and computer systems administrator", "Local transit bus driver"). A lone head word
counts only where the layout or a cue says it is a job ("worked as a midwife", "the Singer,",
alone between a name and a form field).
"""

from __future__ import annotations

import re

from strongroom.privacy.types import Span

# Head words of occupational titles (US SOC / ISCO vocabulary), singular; plurals are matched too.
HEADS = frozenset("""
accountant actor actuary adjuster administrator advisor adviser agent aide analyst anesthesiologist
announcer anthropologist appraiser apprentice architect archivist artist assembler assessor assistant
astronomer athlete attendant attorney auditor author baker barber bartender biologist bookkeeper
brickmason broker builder butcher buyer captain cardiologist carpenter cartographer cashier caster
chef chemist chiropractor choreographer cleaner clerk coach collector commissioner composer conductor
conservator consultant controller cook coordinator correspondent cosmetologist counselor counsellor
courier curator cutter dancer decorator dentist deputy designer detective developer dietitian director
dispatcher drafter driver drummer economist editor educator electrician embalmer engineer engraver
entertainer epidemiologist estimator examiner executive farmer finisher firefighter fisher fitter
forester geographer geologist geoscientist glazier guard guide hairdresser handler helper historian
hostess hygienist illustrator inspector installer instructor interpreter interviewer investigator
janitor jeweler journalist judge laborer labourer landscaper lawyer lecturer librarian lifeguard
locksmith logistician machinist maid manager manicurist marshal mason mathematician mechanic mediator
messenger meteorologist microbiologist midwife millwright miner model mover musician nanny navigator
negotiator neurologist nurse nutritionist obstetrician officer operator optician optometrist orderly
paralegal paramedic pathologist pharmacist photographer physician physicist physiotherapist pilot
planner plasterer plumber podiatrist poet porter practitioner president printer producer professor
programmer psychiatrist psychologist radiographer radiologist rancher receptionist recruiter referee
repairer reporter representative researcher roofer salesperson scientist secretary servant setter
sheriff singer sociologist soldier solicitor sonographer specialist statistician steward stewardess
stocker superintendent supervisor surgeon surveyor tailor teacher technician technologist teller
therapist trainer translator treasurer trucker tutor typist underwriter upholsterer usher valet
veterinarian waiter waitress warden welder worker writer zoologist echocardiographer cinematographer
""".split())

_WORD = r"[^\W\d_][\w'’-]*"
_HEAD_RE = re.compile(r"(?<![\w'’-])(" + "|".join(sorted(HEADS, key=len, reverse=True)) + r")(?:e?s)?(?![\w'’-])",
                      re.IGNORECASE)
# modifiers may not be function words or verbs that start a clause
_STOP = frozenset("""
a an the and or of in on at to for is was are were be been as by with from my your his her our their
this that these those i you he she we they it its me him them who whom which what when where why how
not no yes very so but if then than also just only still all any some each every other another such
said says say told asked worked works work working used quit left became become being am do does did
has have had will would can could may might must shall should here there today yesterday tomorrow
""".split())
_CUE_BEFORE = re.compile(r"(?i)(?:\b(?:work(?:s|ed|ing)?|employed|job|hired|trained|serves?|served)[ \t]+as(?:[ \t]+(?:a|an|the))?|"
                         r"\bas[ \t]+(?:a|an)|\bas|\bjob[ \t]*(?:title)?[ \t]*:?|\boccupation[ \t]*:?|"
                         r"\bprofession[ \t]*:?|\btitle[ \t]*:?|\bposition[ \t]*:?)[ \t]+$")
_LAYOUT_BEFORE = re.compile(r"(?:^|\n|[ \t]{2,}|\?{2,}[ \t]*|[|•·>][ \t]*)$")
_LAYOUT_AFTER = re.compile(r"(?:$|\n|[ \t]{2,}|[ \t]*\?{2,}|[ \t]*[|•·>,])")


def occupation_spans(text: str, taken: list[Span]) -> list[Span]:
    """Job titles in ``text``; ``taken`` (names, organisations already found) bound a title's left edge."""
    out: list[Span] = []
    starts = sorted(s.end for s in taken if s.entity_type in ("PERSON", "ORGANIZATION"))
    for m in _HEAD_RE.finditer(text):
        end = m.end()
        start = m.start()
        mods = 0
        # walk left over modifiers on the same line: words (and "and", commas between them)
        pos = start
        while mods < 4:
            mm = re.search(r"(" + _WORD + r")(,?[ \t]+(?:and[ \t]+)?)$", text[max(0, pos - 60):pos])
            if not mm:
                break
            w = mm.group(1)
            wstart = pos - len(mm.group(0))
            if w.lower() in _STOP or any(e > wstart and e <= pos for e in starts):
                break
            pos = wstart
            mods += 1
        start = pos
        before = text[max(0, start - 20):start]
        cue = bool(_CUE_BEFORE.search(before))
        if not cue and re.search(r"(?i)\bthe[ \t]+$", before) and text[start].isupper():
            cue = True  # "the Cinematographer, said": a capitalised title after "the"
        layout = bool(_LAYOUT_BEFORE.search(before)) and bool(_LAYOUT_AFTER.match(text, end))
        after_name = any(abs(start - e) <= 2 for e in starts)
        if mods == 0 and not (cue or layout or after_name):
            continue
        if mods > 0 and not (cue or layout or after_name or text[start].isupper()):
            continue
        score = 0.6 if (cue or layout or after_name) else 0.45
        out.append(Span("OCCUPATION", start, end, score, recognizer="occupation"))
    return out
