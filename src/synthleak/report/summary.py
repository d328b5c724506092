"""The memorisation summary: what each of the verdict's statistics says, in plain words, and why they may differ.

The verdict's descriptive statistics answer two different questions, and a generator can leak by one
without the other:

- **near-copies of single training images** (the copy finder after Dar et al., Gu et al.'s memorised
  share): is some synthetic image so close to one training image that it is a copy of it, closer than
  two patients' images ever get, or far closer to it than to any other training patient?
- **reproduction of training anatomy** (the member-closer share, Meehan et al.'s C_T, Alaa et al.'s
  authenticity): does the synthetic set lie nearer the training patients than comparable held-out
  patients (or, authenticity, nearer a training patient than that patient's nearest other training
  patient)? A generator can do that without any single image being a copy (a blurry or low-resolution
  generator that learnt its training patients' shapes), and it is still a membership leak.
  Authenticity counts here, not among the copies: with patient groups, an "inauthentic" image is one
  nearer a training patient than the nearest other training patient is, a patient-level resemblance;
  on a DDPM benchmark it flagged 59% of the images while the copy finder flagged 1%.

Each statistic gets one sentence: what it measures, what a generator that copies nothing gets, which
way is worse. Whether a statistic *points to* copying is a descriptive rule, stated here so that the
report can say so plainly (none of them is a test except the member-closer p-value):

- member-closer: p < alpha (the verdict's) and share above 0.5;
- C_T: below -2 (synthetic images nearer the training set than fresh patients by more than two
  standard errors of its Mann-Whitney Z);
- copy share: its CI's lower end above 5% (the share a non-copying generator gets by the threshold's
  construction);
- memorised share: at least 1 percentage point above the held-out reals' own share (the labelled
  non-members measured as if they were synthetic: what a generator that samples fresh patients gets);
- authenticity: more than 10 percentage points below the held-out reals' own.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..leakage import Verdict, format_p

COPIES = "near-copies of single training images"
ANATOMY = "reproduction of training anatomy"
CT_LIMIT = -2.0
COPY_BASELINE = 0.05
MEMORISED_MARGIN = 0.01
AUTHENTICITY_MARGIN = 0.10


@dataclass(frozen=True)
class Reading:
    """One statistic, read: its value in words, one sentence, and whether it points to copying."""

    name: str
    question: str  #: COPIES or ANATOMY
    value: str
    sentence: str
    points_to_copying: bool
    short: str = ""  #: name and value in a few words, for the headline


@dataclass(frozen=True)
class Summary:
    readings: list[Reading]
    answers: dict[str, bool | None]  #: question -> yes / no (None: no statistic for it)
    headline: str  #: e.g. "near-copies of single training images: none; reproduction of training anatomy: yes"
    notes: list[str]  #: why statistics disagree, one sentence each


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def readings(v: Verdict) -> list[Reading]:
    """Every statistic the verdict holds, read (missing ones are left out)."""
    out = []
    if v.member_closer_share is not None and v.member_closer_ci is not None and v.member_closer_p is not None:
        low, high = v.member_closer_ci
        p = format_p(v.member_closer_p, v.alpha)
        out.append(Reading(
            "member-closer share", ANATOMY, f"{_pct(v.member_closer_share)} [{_pct(low)}, {_pct(high)}], p = {p}",
            f"{_pct(v.member_closer_share)} of the synthetic images lie nearer a labelled training image than any "
            "labelled held-out image (with as many of each); a generator that copies nothing gets 50%, higher is "
            f"worse (p = {p}: the chance that randomly relabelled reals get this high).",
            v.member_closer_p < v.alpha and v.member_closer_share > 0.5,
            f"member-closer {_pct(v.member_closer_share)} at p = {p}"))
    if v.ct is not None:
        out.append(Reading(
            "C_T (Meehan et al.)", ANATOMY, f"{v.ct:.2f}",
            f"C_T = {v.ct:.2f} compares how close synthetic and held-out images come to the training images, as "
            "a z-score: a generator that copies nothing gets about 0; well below 0 (below -2) is worse, synthetic "
            "images sitting nearer the training images than fresh patients do; well above 0 means they sit farther "
            "(an underfitting generator).",
            v.ct < CT_LIMIT, f"C_T {v.ct:.2f}"))
    if v.copy_share is not None and v.copy_share_ci is not None:
        low, high = v.copy_share_ci
        out.append(Reading(
            "copy share (Dar et al.)", COPIES, f"{_pct(v.copy_share)} [{_pct(low)}, {_pct(high)}]",
            f"{_pct(v.copy_share)} of the synthetic images are judged copies: more similar to a training image than "
            "95% of training images are to their nearest held-out image (and than the generator comes to "
            "held-out images); a generator that copies nothing gets about 5% or less, higher is worse.",
            low > COPY_BASELINE, f"copy share {_pct(v.copy_share)}"))
    if v.memorised_share is not None:
        ref = v.memorised_share_held_out
        ref_text = f" (held-out real images: {_pct(ref)})" if ref is not None else ""
        out.append(Reading(
            "memorised share (Gu et al.)", COPIES, _pct(v.memorised_share) + ref_text,
            f"{_pct(v.memorised_share)} of the synthetic images have a training image more than three times nearer "
            "than the next training image of another patient (or image, without groups); a generator that copies "
            f"nothing gets about what held-out real images get{ref_text}, higher is worse.",
            v.memorised_share >= MEMORISED_MARGIN + (ref or 0.0), f"memorised {_pct(v.memorised_share)}"))
    if v.authenticity is not None:
        ref = v.authenticity_held_out
        ref_text = f" (held-out real images: {_pct(ref)})" if ref is not None else ""
        out.append(Reading(
            "authenticity (Alaa et al.)", ANATOMY, _pct(v.authenticity) + ref_text,
            f"{_pct(v.authenticity)} of the synthetic images are authentic: farther from their nearest training "
            "image than that training image is from the nearest training image of another patient (another image, "
            "without groups); a generator that copies "
            f"nothing gets about what held-out real images get{ref_text}, lower is worse.",
            ref is not None and v.authenticity < ref - AUTHENTICITY_MARGIN, f"authenticity {_pct(v.authenticity)}"))
    return out


def _names(rs: list[Reading]) -> str:
    return ", ".join(r.short for r in rs)


def summarise(v: Verdict) -> Summary:
    """The readings, the answer to each question, and a note for each disagreement."""
    rs = readings(v)
    by = {q: [r for r in rs if r.question == q] for q in (COPIES, ANATOMY)}
    answers: dict[str, bool | None] = {q: (any(r.points_to_copying for r in by[q]) if by[q] else None)
                                       for q in (COPIES, ANATOMY)}
    parts = []
    for q in (COPIES, ANATOMY):
        if answers[q] is None:
            parts.append(f"{q}: not measured")
            continue
        yes = [r for r in by[q] if r.points_to_copying]
        parts.append(f"{q}: " + (f"yes ({_names(yes)})" if yes else f"none ({_names(by[q])})"))
    notes = []
    get = {r.name.split(" (")[0]: r for r in rs}
    if answers[COPIES] is False and answers[ANATOMY]:
        notes.append("No synthetic image copies a single training image closely enough to be called a copy, yet the "
                     "synthetic set as a whole lies nearer the training patients than held-out ones: the generator "
                     "reproduces training anatomy without pixel-level copies. That is still a membership leak (an "
                     "attacker can tell training patients from others), just not one a list of copies shows.")
    if answers[COPIES] and answers[ANATOMY] is False and "member-closer share" in get:
        notes.append("Some synthetic images are flagged as near-copies, but the set as a whole is no nearer the "
                     "training patients than held-out ones (member-closer share not above chance): the flagged images "
                     "may resemble anatomy every patient shares rather than one training patient. Look at them before "
                     "concluding.")
    copy, gu, auth = get.get("copy share"), get.get("memorised share"), get.get("authenticity")
    if copy and gu and copy.points_to_copying and not gu.points_to_copying:
        notes.append(f"The copy finder flags {copy.value.split(' [')[0]} of the synthetic images but the memorised "
                     f"share is {gu.value.split(' (')[0]}: the flagged images are nearer a training image than two "
                     "patients' images usually get, but not three times nearer it than the next training patient's: "
                     "they resemble several training patients at once (an average, or a blend), not one.")
    if copy and gu and gu.points_to_copying and not copy.points_to_copying:
        notes.append(f"The memorised share is {gu.value.split(' (')[0]} but the copy finder flags "
                     f"{copy.value.split(' [')[0]}: some synthetic images stand out near one training image, yet no "
                     "nearer than two real patients' images can come; in a sparse labelled set one neighbour can "
                     "stand out without being a copy.")
    closer, ct = get.get("member-closer share"), get.get("C_T")
    if auth and closer and auth.points_to_copying and not closer.points_to_copying:
        notes.append(f"Authenticity is {auth.value}: many synthetic images sit nearer a training image than that "
                     "image's nearest other training patient, more often than held-out images do, but the member-closer "
                     "share is not above chance: they are as near held-out patients too, so this may be a generator "
                     "that favours the typical anatomy of these patients rather than reproducing the training set.")
    if auth and closer and closer.points_to_copying and not auth.points_to_copying:
        notes.append(f"Authenticity is {auth.value}: measured against the training set's own spacing, the synthetic "
                     "images come not much nearer the training images than held-out images do (less than "
                     f"{100 * AUTHENTICITY_MARGIN:.0f} points apart), yet clearly more of them are nearer a training image "
                     "than a held-out one (member-closer): the generator leans towards its training patients without "
                     "sitting inside their spacing.")
    if closer and ct and closer.points_to_copying and not ct.points_to_copying:
        notes.append(f"C_T is {ct.value}: in absolute terms the synthetic images come no nearer the training images "
                     "than fresh patients do (blur or a lower resolution keeps them away from every real image), "
                     "yet they are nearer training than held-out patients: a relative reproduction, which the "
                     "member-closer share measures and C_T does not.")
    if closer and ct and ct.points_to_copying and not closer.points_to_copying:
        notes.append(f"C_T is {ct.value} (nearer the training images than fresh patients) but the member-closer share "
                     "is not above chance: C_T weighs the synthetic images' distances against held-out images' "
                     "within a few regions, so part of the space can drive it; read it with the member-closer share.")
    return Summary(rs, answers, "; ".join(parts), notes)


def conclusion(s: Summary) -> str:
    """One sentence on what the generator does, from the two answers."""
    copies, anatomy = s.answers[COPIES], s.answers[ANATOMY]
    if anatomy and copies:
        return "The generator reproduces training anatomy and makes near-copies of single training images."
    if anatomy:
        return "The generator reproduces training anatomy (without near-copies of single training images)."
    if copies:
        return ("Near-copies of single training images were found, but the synthetic set as a whole does not "
                "reproduce training anatomy more than held-out anatomy.")
    if anatomy is None and copies is None:
        return "No memorisation statistic could be computed."
    return ("None of these statistics points to memorisation; that is not proof of privacy (they see only the "
            "labelled training images, in this feature space).")
