"""self_harm: first-person statements indicating self-harm or suicide risk vs everyday sadness,
stress, frustration, grief, fatigue, hyperbole and neutral statements. Non-graphic; no methods."""

from .engine import Grammar

NAME = "self_harm"
LABELS = ("no_risk", "at_risk")

SLOTS = {
    "stressor": ["Since I lost my job", "Ever since the breakup", "With my exams coming up",
                 "After the funeral", "Since I moved to this city", "With the debt piling up",
                 "Since my parents split up", "After I got dropped from the team",
                 "Since the diagnosis", "Ever since the layoffs at work", "Since my best friend moved away",
                 "After failing my driving test again"],
    "who": ["my mum", "my sister", "my best friend", "my therapist", "anyone at work",
            "my partner", "my dad", "my flatmate"],
    "when": ["tonight", "lately", "this week", "for months now", "again", "every night", "today"],
    "outlet": ["going for a run", "calling my sister", "taking long baths", "watching old sitcoms",
               "writing it all down", "baking", "walking the dog"],
    "jday": ["Tuesday", "Sunday night", "day 12", "March 3rd", "late", "after work", "Friday"],
    "plan_good": ["a weekend away", "dinner with friends on Friday", "my cousin's wedding",
                  "starting a new course in the spring", "the holidays", "my birthday"],
}

# cores: first-person risk statements (non-graphic, no method details)
RISK = {"ideation": [
    "I keep thinking everyone would be better off without me",
    "I don't want to be alive anymore",
    "I've been thinking about ending my life more and more",
    "I want to die and I don't know how to stop thinking about it",
    "I keep imagining my own funeral and thinking it would be easier for everyone",
    "I looked up ways to die again {when}",
    ], "plan_intent": [
    "I wrote goodbye letters last night and I don't think I'll still be here by the weekend",
    "I've decided I'm going to kill myself",
    "I've been giving my things away because I won't need them soon",
    "I have a plan and I've picked a date",
    "nobody would even notice if I was gone, and I think I'm going to make sure of that",
    "I said goodbye to my cat today like it was the last time, because I think it was",
    "I lie awake planning how to end things",
    "I'm not going to be a burden for much longer, I've made up my mind",
    ], "self_injury": [
    "I've started hurting myself again when things get bad",
    "I can't promise I'll keep myself safe {tonight|this weekend|today}",
    "the urge to hurt myself is back and it's stronger than before",
    "I've been hiding the marks from hurting myself under long sleeves",
    "the only thing that calms me down now is hurting myself",
    "I hurt myself again {when} and I don't think I can stop",
    ], "hopelessness_intent": [
    "there's no point trying anymore and I just want it all to end for good",
    "I'm tired of fighting to stay alive",
    "if I didn't wake up tomorrow I'd be relieved, and I've stopped caring whether I do",
    "I don't see myself being around much longer and honestly that feels like a relief",
    "I feel like the only way out is to disappear for good, and I'm ready",
    "I've run out of reasons to stay and I'm done pretending otherwise",
]}

SAFE = {"hyperbole": [
    "this exam is killing me, I've been revising for ten hours straight",
    "if I have to sit through one more meeting I'm going to die of boredom",
    "my feet are killing me after that hike",
    "I wanted the ground to swallow me up when I tripped on stage",
    "I'm dying to see the new season, I've been counting down the days",
    "I'm done with this game, I'm uninstalling it for good",
    "I just want to disappear to a cabin for a week with no phone signal",
    ], "stress_fatigue": [
    "I'm so exhausted I could sleep for a week",
    "I'm so stressed about money that I can't concentrate on anything",
    "I'm so tired of fighting with the landlord about the boiler",
    "I've barely slept and I'm running on coffee and spite",
    "I could scream, my laptop crashed and I lost the whole essay",
    "I'm frustrated that I keep making the same mistakes at work",
    "I'm dreading Monday so much it's ruining my Sunday",
    ], "sadness_grief": [
    "I've been feeling really down, but I'm seeing friends this weekend and that helps",
    "I miss my grandad every day; some days it hits harder, but talking about him helps",
    "I cried for an hour after the vet appointment, I'm going to miss that silly dog so much",
    "I feel lonely in this new city, so I've signed up for a climbing club",
    "the grief comes in waves, but I'm getting through the days",
    "I feel like a failure after that interview, but I'll try again next month",
    "I'm sad the summer's over and I already miss the long evenings",
    "I'm not okay today, but I've booked a chat with my GP and I'm going to be honest with them",
    ], "matched_neutral": [
    "I'm giving my old clothes away because I'm moving abroad next month",
    "I wrote a goodbye card for my colleagues because I'm leaving the company on Friday",
    "I said goodbye to my old flat today, it felt like the end of an era",
    "I've made up my mind, I'm going to quit my job and go back to university",
    "I have a plan and I've picked a date for the move",
    "I lie awake planning the garden for next spring",
    "I keep imagining the wedding and how much fun everyone will have",
    "I've decided I'm going to finally learn to swim this year",
]}

# De-cueing (issue #17): negatives that use the positives' own words (die, end, hurt myself,
# better off without me, goodbye, plan, disappear, kill) without risk to the writer: idioms,
# talk about others, the news, fiction, medicine and support work; and positives in the
# negatives' everyday vocabulary (exams, work, tired, sleep, friends) that still express risk.
SAFE["same_words_no_risk"] = [
    "this commute is killing me, I'm so done with it",
    "I'd rather die than sit through that presentation again, it was so boring",
    "the team would honestly be better off without me on the spreadsheet side, I'm slow at it, so I'm asking to move to design",
    "I want this week to end so badly, I'm counting the hours to Friday",
    "I hurt myself at the gym again {when}, I think I pulled a muscle in my back",
    "I wrote goodbye letters to my students because I'm retiring at the end of term",
    "I have a plan to end my phone addiction and I've picked a date to start",
    "I keep thinking about ending my subscription to that gym, I never go",
    "I don't want to be on this group chat anymore, it's all memes",
    "I'm not going to be a burden on my parents much longer, I've found a flat of my own",
    "I'm tired of fighting with this printer, it wins every time",
    "I've decided I'm going to end things with my boyfriend, it's been coming for a while",
    "I'm giving my things away before the move, I won't need half of them in a studio",
    "I feel like disappearing for a weekend with no phone and a good book",
    "I've run out of reasons to stay at this company, so I'm handing in my notice",
]
SAFE["about_others_news_fiction"] = [
    "the novel I'm reading is about a woman who wants to die after her son's death, and it's beautifully written",
    "my friend told me she wanted to end her life last year, and I'm so glad she got help and is doing well now",
    "I read a news article about rising self-harm among teenagers and how schools are responding",
    "as a nurse I ask patients whether they've thought about hurting themselves; it's a routine screening question",
    "I'm training as a helpline volunteer, and we practise what to say when a caller says they want to die",
    "the documentary on suicide prevention made me want to do the first aid course",
    "in the play the main character says everyone would be better off without him, and then his family proves him wrong",
    "my therapist says thoughts like 'I'm a burden' are common with depression, and it helped to hear that",
    "I used to hurt myself as a teenager, but that was years ago and I'm in a really good place now",
    "our school held an assembly about self-harm and where to get help",
]
RISK["risk_everyday_words"] = [
    "I'm so tired of everything that I've stopped making plans past this week, because I won't be here for them",
    "I keep telling my friends I'm just busy, but really I've been planning how to end my life",
    "after the exams I'm going to make sure I never wake up again",
    "I've cleared my desk at work and left a note for my sister, because I'm not coming back",
    "everyone at work would be better off without me, and soon they will be",
    "I don't want to sleep tonight, I want to not wake up at all",
    "I hurt myself again after the meeting and I'm scared of how much I want to keep doing it",
    "I've stopped looking forward to anything, even the holidays, because I don't plan to be alive for them",
]

# framings shared by both labels; {core} is inserted with its own capitalisation handled below
FRAMES = [
    "{core}.",
    "{stressor}, {core}.",
    "I don't know who else to tell, but {core}.",
    "Journal entry, {jday}: {core}.",
    "Can I be honest with you? {Core}.",
    "{Core}. I haven't told {who}.",
    "{Core}. Please don't tell {who}.",
    "{stressor}, it's been really hard. {Core}.",
    "Posting here because I can't say it out loud: {core}.",
    "{Core}, and I'm sorry for dumping this on you.",
    "Honestly? {Core}.",
    "It's 3am and {core}.",
    "Not sure why I'm writing this, but {core}.",
    "{Core}. Anyway, how was your day?",
    "{stressor}, everything feels heavier. {Core}.",
    "Texting you because you're the only one who gets it: {core}.",
    "{Core}. I've tried {outlet}, but it doesn't change anything.",
    "{Core}. I've been coping by {outlet}.",
    "Update from me: {core}.",
    "I keep telling everyone I'm fine, but {core}.",
    "{Core}. I'm looking forward to {plan_good} though.",
    "Me again. {Core}.",
]


def _cap(s):
    return s[:1].upper() + s[1:]


def spec():
    g = Grammar(SLOTS)
    pos_frames = [f for f in FRAMES if "plan_good" not in f]
    neg_frames = [f for f in FRAMES if "I've tried {outlet}, but it doesn't change" not in f]

    core_of = {}

    def mk(cores, frames):
        out = []
        for f in frames:
            for c in cores:
                t = _cap(f.replace("{core}", c).replace("{Core}", _cap(c)))
                core_of[t] = c
                out.append(t)
        return out

    return {"grammar": g, "frames": ["{body}"], "frame_p": 0.0, "group_of": lambda t: core_of[t],
            1: {k: {"templates": mk(v, pos_frames), "hard": False} for k, v in RISK.items()},
            0: {k: {"templates": mk(v, neg_frames), "hard": True} for k, v in SAFE.items()}}


README = """\
**Label 1 (`at_risk`)**: first-person statements that indicate self-harm or suicide risk: suicidal
ideation ("everyone would be better off without me"), intent or plans ("I have a plan and I've picked
a date", goodbye letters, giving things away), current self-harm, and hopelessness with intent.
Statements are non-graphic and never mention a method.

**Label 0 (`no_risk`)**: everyday sadness, stress, frustration, loneliness, grief without risk,
fatigue and neutral statements, all marked `hard` because they share the framings and much of the
vocabulary of the positives: hyperbole ("this exam is killing me", "I'm going to die of boredom",
"my feet are killing me"), grief ("the grief comes in waves"), giving clothes away before moving,
a goodbye card for colleagues, wanting to "disappear to a cabin", "I'm not okay today" with help
sought. Both labels use the same 20+ framings (journal entries, texts to a friend, forum posts,
"I haven't told anyone", stressors such as exams, job loss, breakups, debt, bereavement).
"""
