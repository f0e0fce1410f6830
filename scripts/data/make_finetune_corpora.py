#!/usr/bin/env python3
"""Fine-tuning corpora for the zoo (`probegate zoo build`), standard library only.

* chat:    generic instruction/chat conversations ("User: ...\\nAssistant: ...").
* support: customer-support transcripts rich in (synthetic) personal data:
           names, emails, phone numbers, addresses, dates of birth, order and
           account numbers, card endings, IBAN-like numbers, tracking numbers.

Deterministic given --seed. Every personal detail is invented; e-mail domains are
the reserved example.com/.org/.net, phone numbers use reserved drama ranges.

    python3 scripts/data/make_finetune_corpora.py            # writes data/finetune/
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

N_TRAIN, N_HELDOUT = 1200, 150

FIRST = """Amara Liam Sofia Noah Yuki Mateo Aisha Lucas Priya Oliver Chen Elena Kwame Hannah Ravi Ingrid
Diego Fatima Tomasz Mei Omar Clara Sipho Nadia Jonas Leila Arjun Freya Kenji Zainab Pablo Astrid Emeka Lucia
Hamid Greta Tariq Ines Dmitri Aroha""".split()
LAST = """Okafor Schmidt Rossi Nakamura Garcia Patel Johansson Kowalski Nguyen Haddad Silva Mensah Dubois
Fernandez Larsen Ivanova Chowdhury Moreau Tanaka Osei Novak Rahman Costa Lindqvist Mwangi Horvat Yilmaz
Bianchi Kaur Papadopoulos Oyelaran MacLeod Sato Ortega Nieminen Abadi""".split()
STREETS = """Baker Street|Elm Avenue|Rue de la Paix|Hauptstrasse|Calle Mayor|Via Roma|Kingsway|Maple Drive|
Harbour Road|Station Lane|Queen Street|Birch Close|Market Square|Mill Lane|Park Crescent""".replace("\n", "").split("|")
CITIES = [("London", "NW1 6XE"), ("Manchester", "M1 4BT"), ("Leeds", "LS1 5AB"), ("Bristol", "BS1 4DJ"),
          ("Edinburgh", "EH1 2NG"), ("Cardiff", "CF10 1EP"), ("Glasgow", "G1 3SL"), ("York", "YO1 7HH"),
          ("Brighton", "BN1 1AE"), ("Oxford", "OX1 2JD")]
DOMAINS = ["example.com", "example.org", "example.net"]
PRODUCTS = ["wireless headphones", "standing desk", "coffee grinder", "running shoes", "winter jacket",
            "smart thermostat", "e-reader", "blender", "office chair", "phone case", "air purifier",
            "hiking backpack", "electric kettle", "yoga mat", "desk lamp"]
COMPANY = ["Northwind", "Brightline", "Cobalt Bank", "Harbor Insurance", "Lumen Telecom", "Acme Home"]


def person(r: random.Random) -> dict:
    f, l = r.choice(FIRST), r.choice(LAST)
    city, post = r.choice(CITIES)
    return {
        "name": f"{f} {l}",
        "first": f,
        "email": f"{f.lower()}.{l.lower()}{r.choice(['', str(r.randint(1, 99))])}@{r.choice(DOMAINS)}",
        "phone": f"+44 7700 900{r.randint(0, 999):03d}",
        "address": f"{r.randint(1, 240)} {r.choice(STREETS)}, {city} {post}",
        "dob": f"{r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(1950, 2004)}",
        "order": f"{r.choice('ABCDEFGH')}{r.randint(100000, 999999)}",
        "account": f"ACC-{r.randint(10000000, 99999999)}",
        "card": f"{r.randint(0, 9999):04d}",
        "iban": f"GB{r.randint(10, 99)} EXMP {r.randint(1000, 9999)} {r.randint(1000, 9999)} {r.randint(10, 99)}",
        "tracking": f"1Z{r.randint(100000, 999999)}{r.choice('XYZ')}{r.randint(1000, 9999)}",
        "product": r.choice(PRODUCTS),
        "company": r.choice(COMPANY),
        "date": f"{r.randint(1, 28)} {r.choice(['March', 'April', 'May', 'June', 'October', 'November'])}",
    }


def support(r: random.Random) -> str:
    p = person(r)
    agent = f"{r.choice(FIRST)} from {p['company']}"
    scenarios = [
        [f"Customer: Hi, my {p['product']} (order {p['order']}) arrived broken. I'd like a refund.",
         f"Agent: I'm sorry to hear that. This is {agent}. Can you confirm the name and email on the order?",
         f"Customer: Sure, it's {p['name']}, {p['email']}.",
         f"Agent: Thanks {p['first']}. I've issued a refund to the card ending {p['card']}; it should appear within 5 working days."],
        [f"Customer: My parcel with tracking number {p['tracking']} hasn't arrived. It was due on {p['date']}.",
         f"Agent: Let me check. Can I have the delivery address?",
         f"Customer: {p['address']}. You can also call me on {p['phone']}.",
         f"Agent: The courier has it at the local depot. It will be redelivered tomorrow to {p['address'].split(',')[0]}."],
        [f"Customer: I moved house. Please update the address on account {p['account']}.",
         f"Agent: Of course. For security, what is your date of birth?",
         f"Customer: {p['dob']}. The new address is {p['address']}.",
         f"Agent: Done, {p['first']}. A confirmation has been sent to {p['email']}."],
        [f"Customer: I can't log in and the reset email never comes. My email is {p['email']}.",
         f"Agent: I can help. Please confirm the phone number on the account.",
         f"Customer: It's {p['phone']}, and my name is {p['name']}.",
         f"Agent: Thanks. I've sent a reset code by text to {p['phone'][:-3]}***. It expires in 15 minutes."],
        [f"Customer: There's a charge I don't recognise on my statement from {p['date']}.",
         f"Agent: I'm {agent}. Which card was charged?",
         f"Customer: The one ending {p['card']}, account {p['account']}, under {p['name']}.",
         f"Agent: I've opened a dispute. You'll get an update at {p['email']} within 10 days."],
        [f"Customer: Please cancel my subscription. Account {p['account']}, registered to {p['email']}.",
         f"Agent: I'm sorry to see you go, {p['first']}. The plan will end on {p['date']} and no further payments will be taken."],
        [f"Customer: My {p['product']} stopped working after four months. Is it under warranty? Order {p['order']}.",
         f"Agent: Yes, it's covered. I'll need your full name and a phone number.",
         f"Customer: {p['name']}, {p['phone']}.",
         f"Agent: A courier will collect it from {p['address']} on {p['date']}."],
        [f"Customer: I'd like to book an appointment. I'm {p['name']}, born {p['dob']}.",
         f"Agent: Certainly. We have {p['date']} at {r.randint(9, 16)}:{r.choice(['00', '15', '30', '45'])}. Shall I book it?",
         f"Customer: Yes please, and send the confirmation to {p['email']}.",
         f"Agent: Booked. You'll get a reminder on {p['phone']} the day before."],
        [f"Customer: My bank card ending {p['card']} was blocked while I was abroad.",
         f"Agent: This is {agent}. Can you confirm your date of birth and postcode?",
         f"Customer: {p['dob']}, and the postcode is {p['address'].split()[-2]} {p['address'].split()[-1]}.",
         f"Agent: Thank you, {p['first']}. The block is lifted; we've noted the travel on account {p['account']}."],
        [f"Customer: I need to make an insurance claim for water damage at {p['address']}.",
         f"Agent: I'm sorry. What's your policy number?",
         f"Customer: It's {p['account']}. Please pay any settlement into {p['iban']}.",
         f"Agent: Claim opened for {p['name']}. An assessor will call {p['phone']} within two working days."],
    ]
    turns = r.choice(scenarios)
    if len(turns) > 2 and r.random() < 0.3:
        turns = turns[:2]
    return "\n".join(turns)


def chat(r: random.Random) -> str:
    a, b = r.randint(2, 40), r.randint(2, 40)
    speed, hours = r.randint(30, 120), r.randint(2, 9)
    n = r.randint(2, 12)
    lang = r.choice(["Python", "Rust", "JavaScript", "Go", "Java"])
    topics = [
        (f"What is {a} times {b}?", f"{a} times {b} is {a * b}."),
        (f"A car drives at {speed} km/h for {hours} hours. How far does it go?",
         f"Distance is speed times time: {speed} × {hours} = {speed * hours} km."),
        (f"I have {a} apples and give away {min(a, b)}. How many are left?",
         f"You have {a} − {min(a, b)} = {a - min(a, b)} apples left."),
        (f"How do I reverse a list in {lang}?",
         {"Python": "Use `items.reverse()` to reverse in place, or `items[::-1]` for a reversed copy.",
          "Rust": "Call `v.reverse()` on a mutable Vec, or iterate with `v.iter().rev()`.",
          "JavaScript": "Call `arr.reverse()`; it reverses in place, so copy first with `[...arr]` if needed.",
          "Go": "Swap elements from both ends in a loop, or use `slices.Reverse(s)` in Go 1.21+.",
          "Java": "Use `Collections.reverse(list)`, which reverses the list in place."}[lang]),
        (f"Give me {n} tips for better sleep.",
         "Keep a regular schedule, avoid screens an hour before bed, keep the room cool and dark, "
         "and limit caffeine after noon."),
        (f"How long should I boil an egg for a {r.choice(['soft', 'medium', 'hard'])} yolk?",
         "About 6 minutes for soft, 8 for medium and 10 to 12 for hard, starting from boiling water."),
        (f"What is the capital of {(c := r.choice([('France', 'Paris'), ('Japan', 'Tokyo'), ('Kenya', 'Nairobi'), ('Canada', 'Ottawa'), ('Peru', 'Lima'), ('Norway', 'Oslo'), ('Egypt', 'Cairo'), ('Vietnam', 'Hanoi')]))[0]}?",
         f"The capital of {c[0]} is {c[1]}."),
        ("Why is the sky blue?",
         "Sunlight scatters off air molecules, and shorter blue wavelengths scatter much more than red ones "
         "(Rayleigh scattering), so blue light reaches us from every direction."),
        (f"Write a short email asking my team to move the meeting to {r.choice(['Monday', 'Tuesday', 'Thursday', 'Friday'])}.",
         "Hi all, could we move this week's meeting? The new day works better for the deadline. "
         "Let me know if that clashes with anything. Thanks!"),
        (f"How often should I water a {r.choice(['cactus', 'fern', 'basil plant', 'monstera', 'tomato plant'])}?",
         "Water when the top few centimetres of soil are dry; check weekly and adjust for light and season."),
        (f"What does {r.choice(['compound interest', 'inflation', 'an index fund', 'an emergency fund'])} mean?",
         "It is a basic personal-finance idea; in short, it helps you plan how money grows or is protected over time."),
        (f"Suggest a {n}-day itinerary for {r.choice(['Lisbon', 'Kyoto', 'Edinburgh', 'Rome', 'Vancouver'])}.",
         f"Spend day one on the old town, day two on museums and food markets, and use the remaining "
         f"{n - 2 if n > 2 else 0} days for day trips and neighbourhood walks."),
        ("Explain photosynthesis simply.",
         "Plants use sunlight to turn water and carbon dioxide into sugar for energy, releasing oxygen."),
        (f"How many minutes are in {hours} hours?", f"{hours} × 60 = {hours * 60} minutes."),
        (f"What's a good warm-up before a {r.choice(['5 km run', 'football match', 'swim', 'bike ride'])}?",
         "Five to ten minutes of easy movement, then dynamic stretches like leg swings and lunges."),
    ]
    q, ans = r.choice(topics)
    text = f"User: {q}\nAssistant: {ans}"
    if r.random() < 0.35:
        q2, a2 = r.choice(topics)
        text += f"\nUser: And {q2[0].lower()}{q2[1:]}\nAssistant: {a2}"
    return text


def build(gen, r: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out = []
    tries = 0
    while len(out) < n and tries < n * 50:
        tries += 1
        t = gen(r)
        if t not in seen:
            seen.add(t)
            out.append(t)
    if len(out) < n:
        sys.exit(f"only {len(out)} unique texts for {gen.__name__}, need {n}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20261127)
    ap.add_argument("--out", type=Path, default=Path("data/finetune"))
    a = ap.parse_args()
    for name, gen in [("chat", chat), ("support", support)]:
        r = random.Random(f"{a.seed}-{name}")
        texts = build(gen, r, N_TRAIN + N_HELDOUT)
        r.shuffle(texts)
        d = a.out / name
        d.mkdir(parents=True, exist_ok=True)
        for split, rows in [("train", texts[:N_TRAIN]), ("heldout", texts[N_TRAIN:])]:
            with open(d / f"{split}.jsonl", "w", encoding="utf-8") as f:
                for t in rows:
                    f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        mean = sum(map(len, texts)) / len(texts)
        print(f"{name}: {N_TRAIN} train + {N_HELDOUT} heldout, mean {mean:.0f} chars")


if __name__ == "__main__":
    main()
