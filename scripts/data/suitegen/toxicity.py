"""toxicity: insults, demeaning remarks, threats and harassment aimed at (fictional) people or
groups vs civil text on the same topics, incl. civil disagreement and strong-but-civil criticism."""

from . import common as C
from .engine import Grammar

NAME = "toxicity"
LABELS = ("civil", "toxic")

SLOTS = {
    "name": C.first_slot(), "name2": C.first_slot("2"),
    "he": C.pron_slot("he"), "He": C.pron_slot("He"), "him": C.pron_slot("him"),
    "his": C.pron_slot("his"),
    "soon": ["tomorrow", "Friday", "the next meeting", "the review"],
    "team": C.pick(C.TEAMS), "team2": C.pick(C.TEAMS),
    "party": ["the Harbour Party", "the Civic Alliance", "the Green Meadow Party",
              "the New Frontier Party", "the Lakeside Independents"],
    "candidate": ["Councillor Varga", "Mayor Thornbury", "Senator Quintero", "Councillor Olsen",
                  "Minister Falkner"],
    "game": ["Skyforge Arena", "Rift Legends", "Kingdoms of Ash", "Turbo Kart Online",
             "Deepfield Tactics"],
    "role": ["support main", "tank", "jungler", "healer", "sniper", "goalkeeper", "striker",
             "team captain"],
    "fans": ["Rovers fans", "Eastbrook supporters", "Herons fans", "Wolves fans", "Comets fans"],
    "group": ["people from Eastbrook", "the night-shift crew", "the new interns",
              "{fans}", "{party} voters", "the people in accounts", "console gamers",
              "the folks on the third floor", "everyone on the {game} forums"],
    "insult_np": ["an absolute clown", "a complete idiot", "a pathetic loser", "a worthless hack",
                  "a brainless moron", "a spineless coward", "an embarrassment to this team",
                  "a waste of space", "a total joke", "a lazy parasite", "a useless fraud",
                  "dumb as a box of rocks", "too stupid to tie your own shoes"],
    "insult_adj": ["pathetic", "brainless", "worthless", "useless", "clueless", "spineless",
                   "stupid", "disgusting", "hopeless", "braindead"],
    "insult_noun": ["clown", "idiot", "loser", "moron", "fraud", "joke", "parasite", "hack",
                    "imbecile", "buffoon"],
    "dismiss": ["Nobody wants you here.", "Do everyone a favour and quit.",
                "Crawl back under whatever rock you came from.", "Shut up and log off.",
                "Honestly, just disappear.", "You make me sick.", "Get lost.",
                "Go cry about it somewhere else.", "Nobody cares what you think."],
    "threat": ["you'll regret it", "I'll make your life hell", "you'd better watch your back",
               "I'll be waiting for you after the game", "I'll make sure you lose your job",
               "someone's going to teach you a lesson", "you won't like what happens next",
               "I'll make sure everyone knows where you live"],
    "workplace_role": ["manager", "team lead", "new hire", "HR rep", "intern", "supervisor",
                       "project manager"],
    "venue": ["the café on Station Road", "that new burger place", "the Lakemont Hotel",
              "the pizzeria by the station", "the hair salon on Mill Lane"],
    "staff": ["the waiter", "the receptionist", "the owner", "the chef", "the manager", "the barista"],
    "issue": ["the housing plan", "the new bus lanes", "the library budget", "the stadium deal",
              "the parking fees", "the school funding formula"],
    "match_event": ["that penalty", "the offside call", "last night's derby", "the transfer window",
                    "the second half", "the cup final"],
    "product": ["the new update", "the patch notes", "the season finale", "the latest album",
                "version 2.0 of the app", "the sequel"],
    "time": ["last night", "on Saturday", "in the final", "this morning", "yesterday", "again today"],
}

POS = {
    "insult_person": [
        "I hope {name} gets benched forever, the {insult_adj} {insult_noun}.",
        "I can't believe they let a(n) {insult_noun} like {name} run anything. {dismiss}",
        "I'm sick of {group}; they're {insult_adj} {insult_noun}s, every one of them.",
        "{name}, you are {insult_np}. {dismiss}",
        "Honestly {name}, every time you open your mouth I lose brain cells. You're {insult_np}.",
        "Look at this {insult_noun} {name} trying to act smart again. {dismiss}",
        "Nobody in this group chat likes you, {name}. You're {insult_adj} and everyone laughs at you behind your back.",
        "You're {insult_np}, {name}, and the worst part is you don't even realise it.",
        "Imagine being as {insult_adj} as {name}. Must be exhausting for your family.",
        "{name} is {insult_np} and should be kicked off the team before dragging everyone down.",
        "Reply to {name}: you {insult_adj} {insult_noun}, nobody asked for your opinion.",
    ],
    "sports_abuse": [
        "{fans} are the dumbest people on the planet. {dismiss}",
        "Our {role}, {name}, played like {insult_np} {time}. Sell {him} and never let {him} near a pitch again.",
        "Hey ref, you {insult_adj} {insult_noun}, how much did {team} pay you for {match_event}?",
        "Every single one of you {fans} is {insult_np}. Stay home next season.",
        "{name}, you cost us {match_event}, you {insult_adj} {insult_noun}. Show your face at the ground and {threat}.",
        "If I see any {team2} shirts near our pub on Saturday, {threat}.",
    ],
    "politics_abuse": [
        "{party} is full of {insult_adj} {insult_noun}s, and their voters are even worse.",
        "{party} voters are {insult_adj} sheep who can't think for themselves.",
        "{candidate} is {insult_np} and anyone who votes for them is just as {insult_adj}.",
        "Anyone defending {issue} is {insult_np}. People like you shouldn't be allowed to vote.",
        "Keep posting your {party} nonsense, {name}, and {threat}.",
        "{candidate}, you {insult_adj} {insult_noun}, we know where your office is and {threat}.",
    ],
    "gaming_abuse": [
        "Uninstall {game}, {name}. You're {insult_np} and you ruined every match {time}.",
        "Worst {role} I've ever seen. Seriously {name}, you're {insult_adj}. {dismiss}",
        "lol {name} is such a(n) {insult_noun}, report this {insult_adj} {role} and let's get {him} banned",
        "{group} are all {insult_adj} {insult_noun}s who should quit gaming forever.",
        "Mute your mic, {name}, nobody wants to hear your {insult_adj} voice. {dismiss}",
        "I'm going to find out who you are, {name}, and {threat}.",
    ],
    "workplace_abuse": [
        "Our {workplace_role} is a {insult_adj} {insult_noun} who should be laughed out of the building.",
        "Our {workplace_role} {name} is {insult_np}. How did someone that {insult_adj} ever get hired?",
        "{name}, your work is garbage because you're garbage. {dismiss}",
        "Tell {group} to stop wasting oxygen. They're {insult_adj}, every last one of them.",
        "If you go over my head to HR again, {name}, {threat}.",
        "Everyone in the office thinks you're {insult_np}, {name}. Do us all a favour and resign.",
        "That {insult_adj} {workplace_role} needs to be put in their place, and I'm happy to do it.",
    ],
    "review_abuse": [
        "Avoid {venue}. {^staff} is {insult_np} and looks like something the cat dragged in.",
        "{^staff} at {venue} was a {insult_adj} {insult_noun}; someone that stupid shouldn't be allowed near customers.",
        "Whoever made {product} is {insult_np}. Go back to school, you {insult_adj} {insult_noun}.",
        "One star. {^staff} at {venue} is ugly, rude and {insult_adj}. Fire them and do everyone a favour.",
        "To the owner of {venue}: you're {insult_np}, and if you reply to my review again {threat}.",
    ],
}

NEG = {
    "civil_person": [
        "{name}, I see your point, but I read the data differently. Can we go through it together?",
        "Thanks for the feedback, {name}. I don't fully agree, but I'll think it over before {soon}.",
        "{name} made a good argument in the meeting, even if I ended up voting the other way.",
        "I don't think {name} is right about this, but I appreciate the effort that went into the proposal.",
        "Reply to {name}: fair enough, I hadn't considered that. Let's agree to disagree on the rest.",
        "You made some fair points, {name}, even though I still think the plan needs more work.",
        "Thank you for standing up for the team in that meeting, {name}. You handled it really well.",
        "You and I clearly see this differently, and that's fine. Let's hear what the others think.",
        "{name}, your report has real problems: the budget is unrealistic and the timeline skips testing.",
        "Honestly {name}, I think that was a poor decision, and I'd like to understand the reasoning behind it.",
    ],
    "sports_civil": [
        "{fans} were loud all match, fair play to them. Great atmosphere {time}.",
        "Our {role}, {name}, had a rough game {time}, but everyone has off days. {He}'ll bounce back.",
        "The referee got {match_event} badly wrong, and I think the league should review the footage.",
        "We got absolutely destroyed {time}. The defence was a mess and we need to regroup before the derby.",
        "Credit to {team2}, they deserved the win. Our midfield just never turned up.",
        "{name}, that was a brutal tackle but a clean one. Respect.",
        "You played out of your skin {time}, {name}. That second goal was ridiculous.",
        "Great game! You crushed us in the last ten minutes. Rematch next Saturday?",
        "I'm gutted about {match_event}, but I still think {team} will make the playoffs.",
    ],
    "politics_civil": [
        "I strongly disagree with {party} on {issue}; their numbers don't add up.",
        "{candidate}'s plan for {issue} ignores the people who actually use the service, and I won't be voting for it.",
        "I respect {party} voters, but I think they're wrong about {issue}, and here's why.",
        "The debate on {issue} got heated, but both sides made points worth considering.",
        "{candidate}, I'm a constituent and I'm disappointed by your vote on {issue}. Please explain it at the next town hall.",
    ],
    "gaming_civil": [
        "Tough loss {time}, {name}. Want to practise {game} together this weekend?",
        "As a {role} I think the new patch is badly balanced, and I hope the developers revert it.",
        "GG everyone, we got crushed, but that last round was fun.",
        "{name}, try rotating earlier next match; you'll have a much easier time as {role}.",
        "The {game} matchmaking is frustrating right now. I keep getting paired with much higher ranks.",
        "You carried us {time}, {name}. Thanks for sticking with the team even when we were losing.",
        "If you want, I can show you how I set up my controls; it made a huge difference for me.",
        "I'm muting voice chat for tonight because I need to focus, nothing personal.",
    ],
    "workplace_civil": [
        "I think the {workplace_role}'s new process slows us down, and I'd like to raise it at the retro.",
        "{name}, I was frustrated that my name was left off the report. Can we talk about credit next time?",
        "I disagree with the decision to cut the training budget, and I've written up why for the leadership team.",
        "If this keeps happening I'll have to take it to HR, but I'd rather we sort it out between us first.",
        "Our {workplace_role}, {name}, is strict, but {he}'s fair and the deadlines are realistic.",
        "You missed the deadline again, {name}, and I need you to tell me earlier when things slip.",
        "The project was a failure, and we all share the blame. Let's do a proper post-mortem.",
    ],
    "review_civil": [
        "Two stars. {venue} was disappointing: cold food, a forty-minute wait and an overpriced menu.",
        "{^staff} at {venue} was friendly, but clearly overwhelmed; they need more staff at weekends.",
        "{^product} is a step backwards: slower, buggier and missing features people relied on.",
        "Honestly the worst haircut I've had in years at {venue}. I won't be going back, but I've told them why.",
        "To the owner of {venue}: thanks for replying to my review. I'd be happy to give it another try.",
        "You charged us for a bottle of wine we never ordered. Please correct the bill and I'll leave it there.",
        "I found {product} lazy and the writing weak, though the acting was solid.",
    ],
}

# De-cueing (issue #17): civil texts that carry the positives' vocabulary (the same insult
# words, dismissals and threats) without attacking anyone: quoting or reporting an insult,
# moderation, self-deprecation, strong language about things, heated but civil disagreement;
# and toxic texts that borrow the civil side's polite openings.
NEG["quoted_or_discussed"] = [
    "Someone called {name} {insult_np} in the comments, and I've reported it. That's not okay.",
    "The moderator removed a post calling the ref a(n) {insult_noun}; please keep it civil, everyone.",
    "Is '{insult_noun}' too harsh for a kids' book villain, or is it fine for ages eight and up?",
    "My little brother learned the word '{insult_noun}' at school today and I had to explain why it hurts.",
    "In the film the villain tells the hero he's {insult_np}, but the hero just laughs and walks away.",
    "Calling {fans} {insult_adj} won't win the argument, {name}. Let's talk about {match_event} instead.",
    "The new chat filter blocks '{dismiss}' and similar lines; appeals go to the {game} support team.",
    "Our workshop on online abuse looks at messages like '{threat}' and how to report them.",
    "Saying '{dismiss}' to a new player is against the {game} rules, so the account got a warning.",
    "I felt like {insult_np} when I missed that penalty {time}, but the team were kind about it.",
    "I was {insult_adj} at the quiz tonight, I didn't get a single sports question right. Fun evening though!",
    "This {insult_adj} printer jammed again {time}. I'm going to ask facilities for a new one.",
    "{name} wrote a great essay on why words like '{insult_noun}' do so much damage in online games.",
    "The referee got {match_event} wrong and I'm furious, but nobody deserves abuse for a mistake.",
    "I strongly disagree with you, {name}, and I think the plan for {issue} is a mistake, but I respect you.",
    "I'm so angry about {issue} I could scream, so I'm writing to {candidate} instead.",
]
POS["polite_opening_abuse"] = [
    "Thanks for the feedback, {name}, but honestly you're {insult_np}. {dismiss}",
    "{name}, I see your point, I just think you're {insult_adj}. {dismiss}",
    "Great game everyone, except {name}, who is {insult_np}. {dismiss}",
    "I respect everyone's opinion on {issue} except yours, {name}, you {insult_adj} {insult_noun}.",
    "With all due respect, {candidate}, you're {insult_np} and {threat}.",
    "Fair play to {team2}, but their fans are {insult_adj} {insult_noun}s and {threat}.",
    "Thank you for your service, {name}, now {dismiss}",
]

FRAMES = ["{body}", "Posted on the {game} forum: {body}", "Comment under the match report: {body}",
          "Reply in the group chat: {body}", "{body} #{matchday|rant|opinion|thoughts}",
          "Overheard at work today: \"{body}\""]


def spec():
    g = Grammar(SLOTS)
    return {"grammar": g, "frames": FRAMES, "frame_p": 0.2,
            1: {k: {"templates": v, "hard": False} for k, v in POS.items()},
            0: {k: {"templates": v, "hard": True} for k, v in NEG.items()}}


README = """\
**Label 1 (`toxic`)**: insults, demeaning remarks, harassment and threats aimed at a person or group:
players, referees, fans, politicians and voters, coworkers, restaurant staff, gamers. Wording is
mild to moderate (clown, idiot, loser, pathetic, worthless, "you'll regret it", "watch your back"),
with no slurs and no protected-group targets; all targets are fictional (invented first names, teams,
towns, parties, games, venues).

**Label 0 (`civil`)**: the same topics (sports rivalry, politics, gaming, workplace disputes, reviews)
in civil language. All negatives are marked `hard`: civil disagreement, strong-but-civil criticism
("your report has real problems", "the worst haircut I've had in years", "I'm disappointed by your
vote"), and aggressive-sounding but non-toxic sports/gaming talk ("we got absolutely destroyed",
"a brutal tackle but a clean one", "you crushed us").
"""
