"""Unlabeled, general-purpose prompts for the realignment corpus: a broad mix of everyday
assistant traffic, deliberately not concentrated on the safety concepts."""

from . import common as C
from .engine import Grammar, norm_key

LANGS = ["Python", "Rust", "JavaScript", "TypeScript", "Go", "Java", "C++", "C#", "Ruby",
         "Kotlin", "Swift", "Bash", "SQL", "R", "Haskell", "PHP"]
CODE_TASKS = [
    "read a CSV file into a list of records", "reverse a linked list", "parse JSON from a string",
    "sort a list of dictionaries by a key", "remove duplicates from an array while keeping order",
    "make an HTTP GET request with a timeout", "read a file line by line",
    "convert a date string to a timestamp", "write unit tests for a small function",
    "format a number with thousands separators", "merge two sorted arrays",
    "count word frequencies in a text", "check whether a string is a palindrome",
    "run two tasks concurrently and wait for both", "retry a failing operation with backoff",
    "flatten a nested list", "split a string on whitespace", "generate a random password",
    "compute the median of a list of numbers", "implement binary search",
    "walk a directory tree and list all files", "memoize an expensive function",
    "handle errors without crashing the program", "define an enum with methods",
    "parse command-line arguments", "write a simple REST endpoint",
    "measure how long a function takes", "serialize a struct to JSON",
    "create a thread-safe counter", "build a min-heap priority queue",
    "pad a string to a fixed width", "round a float to two decimal places",
    "validate an email address format", "convert Celsius to Fahrenheit",
    "find the most common element in a list", "zip two lists together",
    "implement a simple LRU cache", "read environment variables with a default",
    "group records by a field", "transpose a matrix",
]
CODE_SNIPPETS = [
    "def mean(xs):\n    return sum(xs) / len(xs)\n\nprint(mean([]))",
    "for i in range(10):\n    if i % 2 == 0:\n        continue\n    print(i)",
    "let v = vec![3, 1, 2];\nlet s = v.sort();\nprintln!(\"\\{:?\\}\", s);",
    "const total = items.reduce((a, b) => a + b.price);\nconsole.log(total);",
    "SELECT name, COUNT(*) FROM orders GROUP BY customer_id;",
    "x = [1, 2, 3]\ny = x\ny.append(4)\nprint(x)",
    "if (user = null) \\{\n  return;\n\\}",
    "with open('data.txt') as f:\n    lines = f.readlines()\nprint(len(lines))",
    "fn first(v: &Vec<i32>) -> &i32 \\{ &v[0] \\}",
    "import numpy as np\na = np.zeros((3, 3))\nprint(a.shape)",
    "while True:\n    n = int(input())\n    if n == 0: break",
    "public static int add(int a, int b) \\{ return a + b; \\}",
    "git rebase -i HEAD~3",
    "docker run -p 8080:80 nginx",
    "df.groupby('city')['sales'].sum().sort_values()",
    "for f in *.txt; do mv \"$f\" \"$\\{f%.txt\\}.md\"; done",
    "let mut count = 0;\nfor c in text.chars() \\{ if c == 'a' \\{ count += 1; \\} \\}",
    "const [state, setState] = useState(0);",
    "print(f\"\\{value:.2f\\}\")",
    "CREATE INDEX idx_users_email ON users(email);",
]
COUNTRIES = ["France", "Kenya", "Peru", "Vietnam", "Norway", "Australia", "Morocco", "Canada",
             "Japan", "Chile", "Portugal", "Ghana", "Mongolia", "New Zealand", "Egypt", "Finland",
             "Argentina", "Thailand", "Ireland", "South Korea", "Iceland", "Colombia", "Poland",
             "India", "Mexico", "Greece", "Turkey", "Brazil", "Indonesia", "Austria"]
CITIES_REAL = ["Lisbon", "Kyoto", "Marrakesh", "Reykjavik", "Hanoi", "Edinburgh", "Cape Town",
               "Buenos Aires", "Vancouver", "Istanbul", "Seville", "Melbourne", "Prague",
               "Oaxaca", "Copenhagen", "Tbilisi", "Krakow", "Singapore", "Montreal", "Porto",
               "Dubrovnik", "Bologna", "Ljubljana", "Valparaiso", "Queenstown"]
HOW_THINGS = ["a rainbow forms", "vaccines train the immune system", "a refrigerator keeps food cold",
              "GPS works out your position", "tides are caused by the moon", "bees make honey",
              "a bicycle stays upright", "noise-cancelling headphones work", "compound interest grows",
              "plants know which way is up", "an electric motor turns", "the heart pumps blood",
              "airplanes stay in the air", "a microwave heats food", "earthquakes are measured",
              "solar panels produce electricity", "the stock market sets prices", "yeast makes bread rise",
              "glaciers move", "a touchscreen detects your finger", "recycling plastic works",
              "the eye focuses on near and far objects", "a thermostat controls temperature",
              "hurricanes form over the ocean", "a 3D printer builds objects", "sound travels through water",
              "credit scores are calculated", "a compass finds north", "the kidneys filter blood",
              "wifi sends data through the air"]
PAIRS = [("weather", "climate"), ("a virus", "a bacterium"), ("affect", "effect"),
         ("a crocodile", "an alligator"), ("baking soda", "baking powder"), ("RAM", "storage"),
         ("a latte", "a flat white"), ("stocks", "bonds"), ("a hurricane", "a typhoon"),
         ("mass", "weight"), ("a lake", "a pond"), ("an ISA", "a pension"), ("HTTP", "HTTPS"),
         ("a simile", "a metaphor"), ("a comet", "an asteroid"), ("jam", "jelly"),
         ("a lease", "a licence"), ("speed", "velocity"), ("a frog", "a toad"),
         ("a violin", "a viola"), ("an alligator", "a caiman"), ("a meteor", "a meteorite"),
         ("TCP", "UDP"), ("a cold", "the flu"), ("a debit card", "a credit card"),
         ("a rabbit", "a hare"), ("a crepe", "a pancake"), ("empathy", "sympathy"),
         ("a sonnet", "a haiku"), ("a psychologist", "a psychiatrist")]
DISHES = ["lentil soup", "banana bread", "chicken curry", "vegetable lasagne", "shakshuka",
          "mushroom risotto", "fish tacos", "pad thai", "a Victoria sponge", "chilli con carne",
          "falafel", "a Greek salad", "pumpkin pie", "beef stew", "pesto pasta", "miso ramen",
          "a Spanish omelette", "apple crumble", "stuffed peppers", "dal", "sourdough pizza",
          "carrot cake", "gazpacho", "teriyaki salmon", "cornbread", "a bean burrito bowl",
          "lemon drizzle cake", "cauliflower cheese", "tomato focaccia", "coconut rice pudding"]
SUBJECTS = ["autumn leaves", "a lighthouse", "the first snow", "a cat asleep in the sun",
            "a busy train station", "the ocean at night", "an old bookshop", "a thunderstorm",
            "morning coffee", "a mountain lake", "city lights", "a forgotten umbrella",
            "the last day of summer", "a garden after rain", "a long road trip", "the moon",
            "a grandmother's kitchen", "a kite on a windy day", "an empty classroom", "fireflies"]
BOOKS = ["Pride and Prejudice", "Moby-Dick", "Frankenstein", "Jane Eyre", "The Odyssey",
         "Great Expectations", "Dracula", "Little Women", "The Time Machine", "Middlemarch",
         "Treasure Island", "Wuthering Heights", "The Count of Monte Cristo",
         "Around the World in Eighty Days", "The Call of the Wild", "Anna Karenina"]
CONCEPTS = ["inflation", "photosynthesis", "the Pythagorean theorem", "supply and demand",
            "black holes", "machine learning", "plate tectonics", "the water cycle", "DNA",
            "blockchain", "opportunity cost", "entropy", "the French Revolution", "recursion",
            "natural selection", "the electoral college", "quantum entanglement", "interest rates",
            "the Renaissance", "climate feedback loops", "probability", "the immune system",
            "object-oriented programming", "the Silk Road", "cloud computing", "impressionism",
            "the nitrogen cycle", "compound interest", "Newton's laws", "the scientific method"]
AUDIENCES = ["a ten-year-old", "a complete beginner", "my grandmother", "a busy executive",
             "a high school student", "someone who hates maths", "a new employee"]
HOBBIES = ["learn the guitar", "start running", "get into birdwatching", "learn to knit",
           "start a vegetable garden", "get better at chess", "learn watercolour painting",
           "start bouldering", "learn to bake bread", "take up photography", "learn Spanish",
           "start journaling", "learn to sew", "get into woodworking", "learn to swim as an adult"]
EMAIL_PURPOSES = ["asking to move our meeting to next week", "thanking them for a great interview",
                  "following up on an unpaid invoice", "requesting a day off next Friday",
                  "introducing two colleagues who should meet", "declining a job offer politely",
                  "asking for feedback on my presentation", "apologising for a late delivery",
                  "inviting the team to a leaving lunch", "asking the landlord to fix the heating",
                  "confirming the agenda for Thursday", "requesting a reference letter",
                  "welcoming a new member to the team", "announcing an office move",
                  "asking a professor about a research position", "chasing a quote from a builder"]
RECIPIENTS = ["my manager", "a client", "my landlord", "the school", "a supplier", "my team",
              "a recruiter", "our neighbours", "the council", "a former colleague"]
WHO = ["a family with two young kids", "a solo traveller on a budget", "a couple who love food",
       "two friends who like hiking", "retired parents", "a student backpacker",
       "someone who hates crowds", "a group of six"]
STORY_CHAR = ["an old lighthouse keeper", "a girl who can hear plants", "a retired astronaut",
              "a detective with no sense of smell", "a baker in a tiny village",
              "the last dragon in Europe", "a robot who wants to paint", "twin sisters on a night train",
              "a postman who reads every letter", "a boy who finds a map in a library book",
              "a cat who runs a hotel", "a nervous substitute teacher", "a time-travelling plumber",
              "a chess champion who lost her memory", "a fox living under a bridge"]
STORY_OPEN = ["woke up to find the sea had disappeared", "received a letter dated fifty years in the future",
              "found a door in the garden wall that wasn't there yesterday",
              "was the only person who noticed the clocks had stopped",
              "opened a shop that sells forgotten memories", "missed the last bus and met a stranger",
              "discovered that the town's statues move at night",
              "inherited a house with one locked room", "heard a knock from inside the wardrobe",
              "won a competition nobody remembered entering"]
TOPICS_CHAT = ["what to cook tonight", "a good podcast for a long drive", "board games for four people",
               "how to keep houseplants alive", "what to get my dad for his birthday",
               "a name for my new puppy", "fun things to do on a rainy Sunday",
               "how to stop procrastinating", "books like The Hobbit", "how to fall asleep faster",
               "a playlist for a dinner party", "ways to save money on groceries",
               "a stretching routine for desk workers", "how to make small talk at a conference",
               "whether to buy or lease a car", "a gift for a coworker who is leaving",
               "what to pack for a weekend camping trip", "how to organise my wardrobe",
               "a good first programming language", "how to make my mornings less rushed"]
PHRASES = ["Where is the nearest train station?", "Could I see the menu, please?",
           "I'm allergic to peanuts.", "What time does the museum open?",
           "Happy birthday, I hope you have a wonderful day!", "How much does this cost?",
           "Thank you for your hospitality.", "Is this seat taken?",
           "The meeting has been postponed until next week.", "I would like a window seat."]
LANGUAGES = ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch",
             "Korean", "Swahili", "Polish", "Turkish", "Greek"]
FACTS = [
    "Who painted the ceiling of the Sistine Chapel?", "How far is the Moon from Earth?",
    "Why is the sky blue?", "What is the tallest mountain in Africa?",
    "How many bones are in the adult human body?", "When was the printing press invented?",
    "What causes the seasons?", "Who wrote One Hundred Years of Solitude?",
    "What's the boiling point of water at high altitude?", "How long does light from the Sun take to reach us?",
    "What is the largest desert in the world?", "Why do cats purr?",
    "How many time zones does Russia have?", "Who discovered penicillin?",
    "What language has the most native speakers?", "Why do onions make you cry?",
    "How do octopuses change colour?", "What's the deepest point in the ocean?",
    "When did the Berlin Wall fall?", "How many moons does Jupiter have?",
    "What is the speed of sound in air?", "Why do we have leap years?",
    "What's the longest river in South America?", "Who invented the telephone?",
    "Why does bread go stale?", "How old is the universe?",
    "What's the smallest country in the world?", "How do bats navigate in the dark?",
    "Why is the ocean salty?", "What was the first animal in space?",
    "How many strings does a cello have?", "What is the national animal of Scotland?",
    "How are rainbows different from halos?", "Why do leaves change colour in autumn?",
    "Who was the first woman to win a Nobel Prize?", "What does a sommelier do?",
    "How tall is the Eiffel Tower?", "What is the chemical symbol for gold?",
    "How do hummingbirds hover?", "Why does the Moon look bigger near the horizon?",
]

SLOTS = {
    "lang": LANGS, "task": CODE_TASKS, "country": COUNTRIES, "city": CITIES_REAL,
    "how": HOW_THINGS, "dish": DISHES, "subject": SUBJECTS, "book": BOOKS, "concept": CONCEPTS,
    "audience": AUDIENCES, "hobby": HOBBIES, "purpose": EMAIL_PURPOSES, "recipient": RECIPIENTS,
    "who": WHO, "char": STORY_CHAR, "opening": STORY_OPEN, "chat": TOPICS_CHAT,
    "language": LANGUAGES, "phrase": PHRASES, "fact": FACTS,
    "first": C.first_slot(), "weekday": C.pick(C.WEEKDAYS), "month": C.pick(C.MONTHS),
    "n_days": C.num_slot(2, 10), "budget": ["on a tight budget", "with a mid-range budget",
                                            "without worrying about cost", ""],
    "constraint": ["that's vegetarian", "without an oven", "for four people", "in under 30 minutes",
                   "that kids will eat", "that's dairy-free", "using a slow cooker",
                   "with whatever's left in the fridge", "that's good for meal prep", "for a dinner party", ""],
    "form": ["haiku", "limerick", "short poem", "sonnet", "four-line rhyme", "free-verse poem"],
    "tone": ["friendly", "formal", "short and polite", "warm but professional", "cheerful"],
    "relation": ["my sister", "an old friend", "my neighbour", "my cousin", "a colleague",
                 "my best friend", "my uncle", "my flatmate"],
    "news": ["just got engaged", "passed their driving test", "started a new job", "had a baby",
             "moved to a new city", "ran their first marathon", "got into university",
             "adopted a rescue dog", "retired after thirty years", "opened a bakery"],
    "pers_msg": ["Can you help me write a message to {relation} who {news}?",
                 "What's a nice way to congratulate {relation}, who {news}?",
                 "Help me reply to {relation}; they {news} and invited me to celebrate.",
                 "Write a short card for {relation} who {news}."],
    "item": ["apples", "notebooks", "tickets", "cupcakes", "bricks", "marbles", "stamps", "books"],
    "sport": ["tennis", "cycling", "swimming", "yoga", "football", "rowing", "climbing", "basketball"],
    "snippet": lambda r, c: r.choice(CODE_SNIPPETS).replace("\\{", "{").replace("\\}", "}"),
    "gadget": ["laptop", "phone", "router", "printer", "smartwatch", "e-reader", "TV", "dishwasher"],
    "problem": ["keeps disconnecting from wifi", "won't turn on", "is really slow after the update",
                "makes a clicking noise", "drains its battery overnight", "shows an error light",
                "won't pair with my headphones", "keeps restarting"],
    "instrument": ["piano", "ukulele", "drums", "violin", "trumpet", "flute"],
    "plant": ["tomatoes", "basil", "a fiddle-leaf fig", "orchids", "strawberries", "lavender",
              "a lemon tree", "succulents", "roses", "chillies"],
    "animal": ["otters", "octopuses", "crows", "elephants", "honeybees", "penguins", "wolves",
               "axolotls", "hedgehogs", "dolphins"],
    "era": ["ancient Rome", "the Ming dynasty", "Victorian London", "the Viking age",
            "the Aztec empire", "medieval Japan", "the Industrial Revolution", "the Roaring Twenties"],
}


def _math(rng, ctx):
    k = rng.randrange(8)
    a, b, c = rng.randrange(3, 60), rng.randrange(2, 25), rng.randrange(2, 12)
    item = rng.choice(SLOTS["item"])
    name = rng.choice(C.FEMALE + C.MALE)
    if k == 0:
        return "%s has %d %s and gives %d to each of %d friends. How many are left?" % (name, a * c + b, item, a, c)
    if k == 1:
        return "A train travels %d km in %d hours. At the same speed, how far does it go in %d hours?" % (a * c, c, b)
    if k == 2:
        return "A shop sells %s at %d for $%d. How much would %d cost?" % (item, c, a, c * b)
    if k == 3:
        return "If a rectangle is %d cm long and %d cm wide, what are its area and perimeter?" % (a, b)
    if k == 4:
        return "A recipe needs %d grams of flour for %d people. How much flour do I need for %d people?" % (a * 10, c, b)
    if k == 5:
        return "%s saves $%d a week. How many weeks until %s can afford something that costs $%d?" % (name, b, "they", a * b + c)
    if k == 6:
        return "What is %d%% of %d, and how would you work it out without a calculator?" % (rng.choice([5, 10, 15, 20, 25, 12, 35]), a * 20)
    return "A tank holds %d litres and fills at %d litres per minute. How long does it take to fill from empty?" % (a * b, b)


TEMPLATES = {
    "code_question": [
        "How do I {task} in {lang}?",
        "What's the idiomatic way to {task} in {lang}?",
        "Can you show me how to {task} in {lang}, with a short explanation?",
        "I'm new to {lang}. How would I {task}?",
        "Write a {lang} function to {task}.",
        "Is there a standard library helper in {lang} to {task}, or should I write it myself?",
    ],
    "code_snippet": [
        "What does this code do?\n{snippet}",
        "Why doesn't this work as I expect?\n{snippet}",
        "Can you review this and suggest improvements?\n{snippet}",
        "Explain this line by line:\n{snippet}",
        "How would I write this in {lang} instead?\n{snippet}",
    ],
    "factual": [
        "{fact}", "What is the capital of {country}, and what is it known for?",
        "Can you explain how {how}?", "I've always wondered how {how}. What's the short answer?",
        "Explain {in simple terms|briefly|step by step} how {how}.",
        "What's the difference between {pair_a} and {pair_b}?",
        "What language do people speak in {country}?", "What's the climate like in {country} in {month}?",
        "Give me three interesting facts about {animal}.", "What was daily life like in {era}?",
        "Summarize the plot of {book} in a paragraph.", "Who are the main characters in {book}?",
    ],
    "explain": [
        "Explain {concept} to {audience}.", "Can you explain {concept} in simple terms?",
        "What are the key ideas behind {concept}?", "Give me an analogy for {concept}.",
        "Write a short quiz with five questions about {concept}.",
    ],
    "recipe": [
        "Give me a recipe for {dish} {constraint}.", "How do I make {dish} {constraint}?",
        "What can I serve with {dish}?", "My {dish} always turns out dry. What am I doing wrong?",
        "Can I freeze {dish}, and how long does it keep?", "Suggest a weekly meal plan that includes {dish}.",
    ],
    "travel": [
        "Plan a {n_days}-day trip to {city} for {who} {budget}.",
        "What should I see in {city} if I only have one day?",
        "Is {month} a good time to visit {country}?",
        "What's the best way to get around {city} without a car?",
        "What local dishes should I try in {city}?",
        "Help me pack for a week in {country} in {month}.",
    ],
    "math": ["{math}", "{math}", "Solve this and show your steps: {math}", "Help my kid with this homework question: {math}"],
    "email": [
        "Write a {tone} email to {recipient} {purpose}.",
        "Draft a short email {purpose}.",
        "Can you make this email more {tone}? It's to {recipient}, {purpose}.",
        "What subject line should I use for an email {purpose}?",
    ],
    "personal": ["{pers_msg}", "{pers_msg}",
                 "I want to reconnect with {relation} after a few years. How should I start the message?",
                 "How do I politely tell {relation} I can't make it to dinner on {weekday}?"],
    "creative": [
        "Write a {form} about {subject}.", "Continue this story: {Char} {opening}.",
        "Write the opening paragraph of a story about {char} who {opening}.",
        "Give me five title ideas for a story about {char}.",
        "Describe {subject} in the style of a nature documentary.",
    ],
    "advice": [
        "I want to {hobby}. Where should I start?", "What are common beginner mistakes when people {hobby}?",
        "How often should I water {plant}?", "My {gadget} {problem}. What can I try?",
        "How do I get back into {sport} after a long break?", "Is it too late to learn the {instrument} at forty?",
        "Can you suggest {chat}?", "I need ideas for {chat}.", "Any tips on {chat}?",
    ],
    "language": [
        "How do you say '{phrase}' in {language}?", "Translate '{phrase}' into {language}.",
        "What are some tips for learning {language} quickly?", "Is {language} grammar hard for English speakers?",
    ],
}


def generate(rng, n, forbidden):
    def pair_a(r, c):
        if "pair_a" not in c:
            c["pair_a"], c["pair_b"] = r.choice(PAIRS)
        return c["pair_a"]

    g = Grammar(SLOTS, {"math": _math, "pair_a": pair_a,
                        "pair_b": lambda r, c: (pair_a(r, c), c["pair_b"])[1],
                        "Char": lambda r, c: r.choice(STORY_CHAR)[:1].upper()})
    g.slots["Char"] = lambda r, c: (lambda s: s[:1].upper() + s[1:])(r.choice(STORY_CHAR))
    cats = list(TEMPLATES)
    out, seen = [], set()
    i = 0
    fails = 0
    while len(out) < n:
        cat = cats[i % len(cats)]
        i += 1
        tpl = rng.choice(TEMPLATES[cat])
        text = g.render(tpl, rng, {})
        text = text[:1].upper() + text[1:]
        k = norm_key(text)
        if k in seen or k in forbidden or len(text.split()) < 3:
            fails += 1
            if fails > 50 * n:
                raise RuntimeError("realign: cannot reach %d unique prompts" % n)
            continue
        seen.add(k)
        out.append(text)
    return out


README = """\
Unlabeled prompts (`{"text": ...}` only) used to compare hidden states of two model versions. A
general mix, cycling through twelve categories with equal counts: coding questions, code snippets to
explain or fix (multi-line), factual questions, explanations for a given audience, recipes, travel
planning, maths word problems (numbers drawn from the seed), e-mails, personal messages, creative
writing and story openers, everyday advice (hobbies, gadgets, plants, chat topics) and translation.
It is not concentrated on the six concepts and contains little safety-relevant text.
"""
