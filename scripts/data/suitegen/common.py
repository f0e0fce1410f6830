"""Shared lexicon and synthetic-value generators. Every value is invented; contact data uses
reserved ranges (555-01xx phone numbers, UK 07700 900xxx drama numbers, example.com/.org/.net
domains, 9xx SSNs, test-style card numbers)."""

FEMALE = ["Maria", "Aisha", "Chloe", "Priya", "Sofia", "Hannah", "Mei", "Fatima", "Olivia",
          "Grace", "Lucia", "Amara", "Nadia", "Emma", "Ingrid", "Yuki", "Zara", "Rosa",
          "Leah", "Keisha", "Anika", "Elena", "Tamsin", "Freya", "Ines", "Joanna", "Marta",
          "Noor", "Sadie", "Beatriz"]
MALE = ["James", "Omar", "Luca", "Daniel", "Kenji", "Mateo", "Tomasz", "Samuel", "Arjun",
        "Ethan", "Kwame", "Felix", "Rafael", "Hugo", "Dmitri", "Callum", "Ibrahim", "Noah",
        "Pedro", "Malik", "Oscar", "Jonas", "Wei", "Declan", "Ravi", "Theo", "Andre",
        "Nikolai", "Elliot", "Marcus"]
LAST = ["Okafor", "Lindqvist", "Haddad", "Moreau", "Castellano", "Brennan", "Nakamura",
        "Kowalski", "Fernandes", "Oyelaran", "Whitfield", "Petrova", "Achterberg", "Delgado",
        "Mwangi", "Sato", "Gallagher", "Rahman", "Novak", "Ellison", "Varga", "Thornbury",
        "Abernathy", "Quintero", "Falkner", "Iyer", "Marchetti", "Olsen", "Barros",
        "Hollis", "Sandoval", "Kaur", "Duval", "Winslow", "Osei", "Lachance", "Brandt",
        "Tanaka", "Rourke", "Szabo"]
CITIES = ["Springfield", "Riverton", "Maple Falls", "Eastbrook", "Port Adley", "Westhaven",
          "Cedar Grove", "Lakemont", "Fairview", "Ashford", "Millbrook", "Northgate",
          "Harrow Bay", "Greenvale", "Oakridge", "Brookfield"]
STATES = ["CA", "NY", "TX", "OR", "IL", "WA", "MA", "CO", "GA", "MN", "PA", "OH"]
STREETS = ["Maple", "Oak", "Willow", "Birch", "Harbour", "Station", "Church", "Mill",
           "Elm", "Juniper", "Chestnut", "Lark", "Orchard", "Rosemary", "Kingfisher",
           "Quarry", "Hawthorn", "Linden", "Meadow", "Granite"]
STREET_SUFFIX = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Close", "Terrace",
                 "Way", "Place"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
COMPANIES = ["Brightwater Supply Co.", "Northwind Outfitters", "Larkspur Telecom",
             "Bluefin Insurance", "Cobalt Bank", "Meridian Health Clinic", "Pinecrest Realty",
             "Harbourline Logistics", "Tallow & Reed", "Quillby Books", "Summit Fitness",
             "Kestrel Airlines", "Orchard Lane Dental", "Vantage Electronics",
             "Greenleaf Grocers", "Ironwood Hardware"]
TEAMS = ["Riverton Rovers", "Eastbrook United", "the Harrow Bay Herons", "Lakemont Lions",
         "Westhaven Wolves", "the Cedar Grove Comets", "Northgate City", "the Oakridge Owls",
         "Fairview Falcons", "Millbrook Athletic"]


def pick_name(rng, ctx, key=""):
    """Binds first{key}, last{key}, he{key}/his{key} etc. and returns 'First Last'."""
    fk = "first" + key
    if fk not in ctx:
        if rng.random() < 0.5:
            ctx[fk] = rng.choice(FEMALE)
            ctx["he" + key], ctx["his" + key], ctx["him" + key] = "she", "her", "her"
        else:
            ctx[fk] = rng.choice(MALE)
            ctx["he" + key], ctx["his" + key], ctx["him" + key] = "he", "his", "him"
        ctx["He" + key] = ctx["he" + key].capitalize()
        ctx["His" + key] = ctx["his" + key].capitalize()
    lk = "last" + key
    if lk not in ctx:
        ctx[lk] = rng.choice(LAST)
    return "%s %s" % (ctx[fk], ctx[lk])


def name_slot(key=""):
    return lambda rng, ctx: pick_name(rng, ctx, key)


def first_slot(key=""):
    def f(rng, ctx):
        pick_name(rng, ctx, key)
        return ctx["first" + key]
    return f


def pron_slot(which, key=""):
    def f(rng, ctx):
        pick_name(rng, ctx, key)
        return ctx[which + key]
    return f


def digits(rng, k):
    return "".join(rng.choice("0123456789") for _ in range(k))


def phone(rng, ctx=None):
    area = rng.choice(["212", "312", "415", "503", "617", "720", "206", "404", "612", "713"])
    dd = "%02d" % rng.randrange(100)
    style = rng.randrange(6)
    if style == 0:
        return "(%s) 555-01%s" % (area, dd)
    if style == 1:
        return "%s-555-01%s" % (area, dd)
    if style == 2:
        return "+1 %s 555 01%s" % (area, dd)
    if style == 3:
        return "07700 900%s" % digits(rng, 3)
    if style == 4:
        return "+44 7700 900%s" % digits(rng, 3)
    return "555-01%s" % dd


def biz_phone(rng, ctx=None):
    dd = "%02d" % rng.randrange(100)
    style = rng.randrange(4)
    if style == 0:
        return "1-800-555-01%s" % dd
    if style == 1:
        return "(888) 555-01%s" % dd
    if style == 2:
        return "0800 555 01%s" % dd
    return "+1 877 555 01%s" % dd


def email(rng, ctx):
    pick_name(rng, ctx)
    f, l = ctx["first"].lower(), ctx["last"].lower()
    dom = rng.choice(["example.com", "example.org", "example.net", "mail.example.com",
                      "inbox.example.org"])
    style = rng.randrange(5)
    if style == 0:
        user = "%s.%s" % (f, l)
    elif style == 1:
        user = "%s%s%d" % (f[0], l, rng.randrange(10, 99))
    elif style == 2:
        user = "%s_%s" % (f, l[:3])
    elif style == 3:
        user = "%s.%s%d" % (f, l[0], rng.randrange(1970, 2006))
    else:
        user = "%s%s" % (l, f[:2])
    return "%s@%s" % (user, dom)


def biz_email(rng, ctx=None):
    role = rng.choice(["support", "billing", "info", "returns", "hello", "press",
                       "accounts", "help", "orders", "bookings"])
    dom = rng.choice(["example.com", "example.org", "example.net"])
    brand = rng.choice(["brightwater", "northwind", "larkspur", "bluefin", "cobalt",
                        "meridian", "pinecrest", "kestrel", "quillby", "summit"])
    return "%s@%s.%s" % (role, brand, dom)


def address(rng, ctx=None):
    num = rng.randrange(2, 980)
    st = "%s %s" % (rng.choice(STREETS), rng.choice(STREET_SUFFIX))
    city = rng.choice(CITIES)
    style = rng.randrange(4)
    if style == 0:
        return "%d %s, %s, %s %s" % (num, st, city, rng.choice(STATES), digits(rng, 5))
    if style == 1:
        return "%d %s, Apt %d, %s" % (num, st, rng.randrange(1, 40), city)
    if style == 2:
        return "Flat %d, %d %s, %s" % (rng.randrange(1, 20), num, st, city)
    return "%d %s, %s" % (num, st, city)


def biz_address(rng, ctx=None):
    num = rng.choice([1, 10, 12, 25, 40, 100, 120, 200, 250, 300, 500])
    st = "%s %s" % (rng.choice(STREETS), rng.choice(["Street", "Avenue", "Road", "Plaza"]))
    city = rng.choice(CITIES)
    unit = rng.choice(["", "Suite %d, " % rng.choice([100, 200, 300, 400, 1200]),
                       "Unit %d, " % rng.randrange(2, 30), "Floor %d, " % rng.randrange(2, 12)])
    return "%s%d %s, %s" % (unit, num, st, city)


def dob(rng, ctx=None):
    y, m, d = rng.randrange(1942, 2006), rng.randrange(1, 13), rng.randrange(1, 29)
    style = rng.randrange(4)
    if style == 0:
        return "%02d/%02d/%d" % (m, d, y)
    if style == 1:
        return "%d %s %d" % (d, MONTHS[m - 1], y)
    if style == 2:
        return "%d-%02d-%02d" % (y, m, d)
    return "%s %d, %d" % (MONTHS[m - 1], d, y)


def event_date(rng, ctx=None):
    y, m, d = rng.choice([2025, 2026, 2027]), rng.randrange(1, 13), rng.randrange(1, 29)
    style = rng.randrange(5)
    if style == 0:
        return "%02d/%02d/%d" % (m, d, y)
    if style == 1:
        return "%d %s" % (d, MONTHS[m - 1])
    if style == 2:
        return "%d-%02d-%02d" % (y, m, d)
    if style == 3:
        return "%s %d" % (MONTHS[m - 1], d)
    return "%s %d %s" % (rng.choice(WEEKDAYS), d, MONTHS[m - 1])


def ssn(rng, ctx=None):
    return "9%s-%s-%s" % (digits(rng, 2), rng.choice(["0", "1", "2", "3", "4", "5"]) + digits(rng, 1),
                          digits(rng, 4))


def card(rng, ctx=None):
    pre = rng.choice(["4000", "4111", "5500", "5105", "4242"])
    return "%s %s %s %s" % (pre, digits(rng, 4), digits(rng, 4), digits(rng, 4))


def card_exp(rng, ctx=None):
    return "%02d/%02d" % (rng.randrange(1, 13), rng.randrange(26, 32))


def iban(rng, ctx=None):
    cc = rng.choice(["GB", "DE", "NL", "FR", "IE", "ES"])
    if cc in ("GB", "IE", "NL"):
        bank = rng.choice(["TEST", "EXMP", "DEMO", "SAMP"])
        return "%s%s %s %s %s %s" % (cc, digits(rng, 2), bank, digits(rng, 4), digits(rng, 4),
                                     digits(rng, 2 if cc != "NL" else 2))
    return "%s%s %s %s %s %s %s" % (cc, digits(rng, 2), digits(rng, 4), digits(rng, 4),
                                    digits(rng, 4), digits(rng, 4), digits(rng, 2))


def passport(rng, ctx=None):
    return rng.choice("CKLMPXZ") + digits(rng, 8)


def acct(rng, ctx=None):
    return digits(rng, rng.choice([8, 10, 12]))


def sortcode(rng, ctx=None):
    return "%s-%s-%s" % (digits(rng, 2), digits(rng, 2), digits(rng, 2))


def routing(rng, ctx=None):
    return "0" + digits(rng, 8)


def order_no(rng, ctx=None):
    style = rng.randrange(4)
    if style == 0:
        return "#" + digits(rng, rng.choice([6, 7, 8]))
    if style == 1:
        return "ORD-%d-%s" % (rng.choice([2025, 2026]), digits(rng, 5))
    if style == 2:
        return "%s-%s" % (digits(rng, 4), digits(rng, 4))
    return "W" + digits(rng, 9)


def tracking(rng, ctx=None):
    style = rng.randrange(4)
    if style == 0:
        return "1Z 999 AA1 %s %s %s" % (digits(rng, 2), digits(rng, 4), digits(rng, 4))
    if style == 1:
        return "9400 %s %s %s %s %s" % (digits(rng, 4), digits(rng, 4), digits(rng, 4),
                                        digits(rng, 4), digits(rng, 2))
    if style == 2:
        return "JD0%s GB" % digits(rng, 11)
    return "TRK-%s-%s" % (digits(rng, 4), digits(rng, 6))


def sku(rng, ctx=None):
    a = "".join(rng.choice("ABCDEFGHJKLMNPRSTVWX") for _ in range(2))
    return "%s-%s-%s" % (a, digits(rng, 4), rng.choice(["BLK", "WHT", "RED", "L", "M", "XL", "01", "22"]))


def ticket(rng, ctx=None):
    return rng.choice(["#", "INC", "CS-", "T-", "REQ-"]) + digits(rng, rng.choice([5, 6, 7]))


def invoice(rng, ctx=None):
    return rng.choice(["INV-", "INV", "", "A-"]) + digits(rng, rng.choice([5, 6]))


def booking_ref(rng, ctx=None):
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))


def flight(rng, ctx=None):
    return rng.choice(["KA", "NW", "BX", "LZ"]) + str(rng.randrange(100, 2999))


def money(rng, ctx=None):
    cur = rng.choice(["$", "£", "€"])
    return "%s%d.%02d" % (cur, rng.randrange(12, 4800), rng.randrange(100))


def time_of_day(rng, ctx=None):
    h = rng.randrange(7, 19)
    m = rng.choice([0, 15, 30, 45])
    if rng.random() < 0.5:
        return "%d:%02d" % (h, m)
    return "%d:%02d %s" % (h if h <= 12 else h - 12, m, "am" if h < 12 else "pm")


def num_slot(lo, hi):
    return lambda rng, ctx: str(rng.randrange(lo, hi + 1))


def pick(lst):
    return lambda rng, ctx: rng.choice(lst)
