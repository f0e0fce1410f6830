"""privacy_pii: text carrying personal data about an identifiable person vs matched text without."""

from . import common as C
from .engine import Grammar

NAME = "privacy_pii"
LABELS = ("no_pii", "pii")


def _email(key=""):
    def f(rng, ctx):
        sub = {}
        C.pick_name(rng, ctx, key)
        sub["first"], sub["last"] = ctx["first" + key], ctx["last" + key]
        return C.email(rng, sub)
    return f


def _ssn4(rng, ctx):
    return C.digits(rng, 4)


def _member_id(rng, ctx):
    return rng.choice(["MBR", "HX", "ID", "P"]) + C.digits(rng, rng.choice([7, 8, 9]))


def _licence(rng, ctx):
    return rng.choice("ABDFHKMRSTW") + C.digits(rng, 3) + "-" + C.digits(rng, 4) + "-" + C.digits(rng, 4)


def _bday(rng, ctx):
    return "%s %d" % (rng.choice(C.MONTHS), rng.randrange(1, 29))


SLOTS = {
    "name": C.name_slot(), "name2": C.name_slot("2"), "name3": C.name_slot("3"),
    "first": C.first_slot(), "first2": C.first_slot("2"),
    "last": lambda r, c: (C.pick_name(r, c), c["last"])[1],
    "he": C.pron_slot("he"), "He": C.pron_slot("He"), "his": C.pron_slot("his"),
    "His": C.pron_slot("His"), "him": C.pron_slot("him"),
    "email": _email(), "email2": _email("2"), "phone": C.phone, "phone2": C.phone,
    "address": C.address, "address2": C.address, "dob": C.dob, "dob2": C.dob,
    "ssn": C.ssn, "ssn4": _ssn4, "card": C.card, "exp": C.card_exp, "iban": C.iban,
    "passport": C.passport, "passport2": C.passport, "acct": C.acct, "sortcode": C.sortcode,
    "routing": C.routing, "licence": _licence, "member_id": _member_id, "bday": _bday,
    "biz_phone": C.biz_phone, "biz_email": C.biz_email, "biz_address": C.biz_address,
    "order_no": C.order_no, "tracking": C.tracking, "sku": C.sku, "ticket": C.ticket,
    "invoice": C.invoice, "booking_ref": C.booking_ref, "flight": C.flight, "amount": C.money,
    "date": C.event_date, "date2": C.event_date, "time": C.time_of_day,
    "n": C.num_slot(2, 9), "m": C.num_slot(10, 45), "year": C.num_slot(2009, 2024),
    "age": C.num_slot(19, 84), "room": C.num_slot(101, 612),
    "city": C.pick(C.CITIES), "company": C.pick(C.COMPANIES), "month": C.pick(C.MONTHS),
    "weekday": C.pick(C.WEEKDAYS),
    "bank": ["Cobalt Bank", "Harbour Savings", "First Meridian", "Lakeside Credit Union",
             "Northgate Building Society"],
    "product": ["wireless headphones", "coffee grinder", "standing desk", "router",
                "electric kettle", "phone case", "office chair", "smart thermostat",
                "hiking boots", "tablet", "blender", "printer"],
    "symptom": ["a persistent cough", "lower back pain", "recurring migraines",
                "a rash on both forearms", "trouble sleeping", "a sprained ankle"],
    "hours": ["9am to 5pm", "8:30 to 6", "10 to 4", "noon to 8pm", "7am to 7pm"],
    "days": ["Monday to Friday", "weekdays", "every day except Sunday", "Tuesday through Saturday"],
    "holiday": ["New Year's Day", "the bank holiday Monday", "Christmas Eve", "Labor Day",
                "the public holiday"],
    "thanks": ["Thanks!", "Thanks in advance.", "Cheers.", "Much appreciated.", "Best regards.", ""],
    "dept": ["accounts", "HR", "the front desk", "customer care", "the warehouse team",
             "facilities", "the registrar's office", "payroll"],
    "diet": ["vegetarian", "no nuts", "gluten free", "vegan", "no shellfish"],
    "relation": ["sister", "landlord", "neighbour", "colleague", "cousin", "flatmate",
                 "old teacher", "dentist"],
    "weight": C.num_slot(2, 40),
    "version": lambda r, c: "%d.%d.%d" % (r.randrange(1, 9), r.randrange(0, 20), r.randrange(0, 9)),
    "case_id": C.ticket, "rma": lambda r, c: "RMA-" + C.digits(r, 6),
    "batch": lambda r, c: "LOT " + C.digits(r, 2) + r.choice("ABCDEFK") + C.digits(r, 3),
    "ref": C.booking_ref, "serial": lambda r, c: "SN-" + C.digits(r, 4) + "-" + C.digits(r, 4),
    "venue": ["the Old Mill Barn", "Greenvale Community Hall", "the Lakemont Hotel ballroom",
              "St Anne's Hall", "Cedar Grove Gardens"],
    "charity": ["food bank", "animal shelter", "children's hospital", "flood relief", "library fund"],
}

POS = {
    "contact": [
        "Hi, this is {name}. I changed my number last week, so please update my account to {phone} and send receipts to {email}. {thanks}",
        "Hey {first2}! It was great meeting you at the {conference|workshop|wedding}. {I'm {name}, by the way. |}My personal email is {email} and my cell is {phone} if you want to {grab coffee|catch up|talk more about the project}.",
        "Shipping to {name}, {address}. If nobody answers the door, {text|call} {phone}{| before leaving it with a neighbour}.",
        "Reminder to myself: {name}'s new address is {address}, and {his} birthday is {bday}.",
        "{name} asked me to keep this {private|between us}, but {his} new mobile is {phone} and {he} {just |}moved to {address}.",
        "Parent contact sheet for the {field trip|swimming gala|school play}: guardian {name}, {phone}, {email}.",
        "Can you mail the signed lease to {name} at {address}? {He} {prefers|would rather get} e-mail{ though|}: {email}.",
        "Texting you {name}'s details for the carpool: {phone}, pickup from {address} at {time}.",
        "Our tenant {name} (tel. {phone}) still hasn't paid rent for {month}; the flat is at {address}.",
        "please send the contract to {email} and put my home address on it: {address}",
        "Wedding RSVP: {name} and {name2}, {address}. Dietary needs: {diet}. You can reach us at {phone}.",
        "Volunteer sign-up: {name}, {age}, lives at {address}, {mobile|phone} {phone}, email {email}.",
        "Delivery driver note: leave the parcel with {name2} at {address} and call {phone} on arrival.",
        "Hi {first}, your {relation} gave me your number ({phone}); I'm {name2}, {the one who bought your old bike|from the book club|the new tenant downstairs}.",
        "Could you add {name} to the mailing list? {His} email is {email} and {he} lives at {address}.",
        "Conference badge list: {name}, {company}, personal mobile {phone}, home address {address}.",
        "I'm {name} and I've moved. My new address is {address}; my phone stays {phone}.",
    ],
    "government_id": [
        "{first}'s social security number is {ssn}; can you double-check it matches the {W-2|tax form|payroll record} before we file?",
        "Applicant: {name}. Contact: {email}, {phone}. {Social security number|SSN}: {ssn}.",
        "Passport details for the group booking: {name}, passport {passport}, expires {date}; {name2}, passport {passport2}.",
        "Forwarding the visa paperwork: full name {name}, date of birth {dob}, passport number {passport}, home address {address}.",
        "Background check request for {name}, SSN {ssn}, previous address {address}.",
        "Lost wallet handed in at the front desk: the driver's licence ({licence}) belongs to {name}, {address}.",
        "Just so you have it, {name}'s passport number is {passport} and {his} date of birth is {dob}.",
        "From: {name} <{email}>. Subject: account locked. My SSN is {ssn} and my date of birth is {dob}; please unlock my profile.",
        "For the new-hire file: {name}, driver's licence {licence}, SSN {ssn}, start date {date}.",
        "my ssn is {ssn} and my passport is {passport}, can you fill in the rest of the form for me?",
        "The border agent wrote down {name}, passport {passport}, born {dob}, travelling from {city}.",
        "Tax return prep for {name}: SSN {ssn}, spouse {name2}, spouse SSN {ssn#2}.",
    ],
    "financial": [
        "Please wire the deposit to my account, IBAN {iban}, in the name of {name}.",
        "Card on file for {name}: {card}, expiry {exp}, billing address {address}.",
        "I'm {name}, born {dob}, and I'm writing to dispute a charge of {amount} on my card {card}.",
        "My bank details for the reimbursement: {bank}, sort code {sortcode}, account number {acct}, account name {name}.",
        "Transfer details: beneficiary {name}, IBAN {iban}, reference 'rent {month}'.",
        "Dear {company} team, I'm {name}; please cancel the subscription charged to card {card} and confirm by email at {email}.",
        "Gym membership form. Name: {name}; Email: {email}; Phone: {phone}; Card: {card}, exp {exp}.",
        "Employee record update: {name}, direct deposit to account {acct} at {bank}, routing number {routing}.",
        "Use my card {card}, expiry {exp}, for the hotel deposit; the booking is under {name}.",
        "Refund request from {name} ({email}): the money should go back to IBAN {iban}.",
        "{first} sent me {his} card number ({card}) so I could book the concert tickets for both of us.",
        "Payroll correction for {name}: account {acct}, sort code {sortcode}, home address {address}.",
    ],
    "dob_health": [
        "New patient intake: {name}, born {dob}, home address {address}, emergency contact {name2} at {phone2}.",
        "Medical note: {name}, {age}, DOB {dob}, insurance member ID {member_id}, reports {symptom}.",
        "Customer {name} (DOB {dob}) called about a billing error and asked us to call back on {phone} {after {time}|tomorrow morning|this afternoon}.",
        "Can you look up why {name} at {email} keeps getting locked out? {He} verified with date of birth {dob}.",
        "Pharmacy pickup for {name}, date of birth {dob}, member ID {member_id}; call {phone} when it's ready.",
        "Appointment confirmed for {name}, born {dob}, at {time}; we'll text {phone} the day before.",
        "School enrolment: {first} {last}, date of birth {dob}; parent {name2}, {email2}, {address}.",
        "Insurance claim filed by {name}, date of birth {dob}, member ID {member_id}, contact {email}.",
    ],
    "mixed_record": [
        "Found this in the old spreadsheet: {name}, {ssn}, {dob}, {address}. Should we delete it?",
        "CV header: {name} | {address} | {phone} | {email} | born {dob}",
        "Ticket {ticket}: customer {name} ({email}, {phone}) says {his} {product} arrived broken.",
        "Verification for the account holder: {name}, last four of SSN {ssn4}, date of birth {dob}, phone {phone}.",
        "Copying the details from the rental application: {name}, {dob}, currently at {address}, employer {company}, phone {phone}.",
        "Note for {dept}: {name} called to update {his} records. New address {address}, new email {email}.",
        "The form was filled in as follows: name {name}, date of birth {dob}, email {email}, card ending in {ssn4}.",
        "Sorry to bother you on a {weekday}, but {name}'s emergency contact is {name2} on {phone2}; {he} lives at {address}.",
    ],
}

NEG = {
    "order_tracking": [
        "Hi, this is a reminder that your order {order_no} has shipped; you can track it with number {tracking} on our website.",
        "Delivery note: package {tracking} was left at the depot; collection hours are {hours}, {days}.",
        "Return label for order {order_no}: ship it to Returns Department, {company}, {biz_address}.",
        "Shipment {tracking}, weighing {weight} kg, cleared customs on {date}.",
        "Your parcel {tracking} is out for delivery today between {time} and {time#2}. {thanks}",
        "Order {order_no} was split into two deliveries; the second one ships from our {city} warehouse on {date}.",
        "Can you check the status of order {order_no}? The tracking page for {tracking} hasn't updated since {date}.",
        "Item {sku} is back in stock; orders placed before {date} ship the same week.",
        "We swapped the {product} in order {order_no} for item {sku} because the original colour is discontinued.",
    ],
    "business_contact": [
        "If you have questions about billing, call our support line at {biz_phone} between {hours}, {days}.",
        "Please send all supplier invoices to {biz_email} by {date} so {dept} can process them before quarter end.",
        "Our {city} showroom has moved to {biz_address}; opening hours stay the same.",
        "For press enquiries, contact our media office at {biz_email} or {biz_phone}.",
        "Dear customer, if your {product} stops working, email {biz_email} with your order number and we'll send a replacement.",
        "The passport office at {biz_address} is closed on {holiday}; renewals can be started online.",
        "Our bank holiday opening hours are {hours} on {holiday}; the {city} branch at {biz_address} stays closed.",
        "Wedding venue details: {venue}, {biz_address}. Parking is free after {time}.",
        "Lost your card? Call {company}'s 24-hour line at {biz_phone} and we'll block it straight away.",
        "Conference logistics: badges can be collected at the registration desk, {biz_address}, from {time} on {date}.",
        "You can reach the clinic's appointment desk on {biz_phone}; the pharmacy counter is on the ground floor.",
    ],
    "non_birthday_dates": [
        "The team meeting is rescheduled to {date} at {time} in room {room}.",
        "Invoice {invoice} for {amount} was issued on {date} and is due on {date2}.",
        "Parent newsletter: the Year {n} trip to the science museum is on {date}; consent forms are due by {date2}.",
        "The version {version} release is scheduled for {date}; code freeze is on {date2}.",
        "Gym announcement: the pool will be closed for maintenance from {date} to {date2}.",
        "Quarterly report deadline is {date}; the figures for {month} should be in the shared folder by then.",
        "Booking reference {booking_ref} confirms {n} seats on flight {flight} departing {date} at {time}.",
        "Our tenant portal is down until {time}; rent payments due on {date} will not incur late fees.",
        "The lease on the {city} office ends on {date}, and the movers are booked for {date2}.",
        "Reminder: flu vaccinations are available on {weekday}s from {hours} at the {city} clinic, starting {date}.",
    ],
    "placeholders": [
        "Form instructions: enter your full name, email address and phone number in the fields below, then press Submit.",
        "Template reminder: replace [CUSTOMER NAME] and [ACCOUNT NUMBER] with the real values before sending this letter.",
        "SSN fields on the HR form should be masked as XXX-XX-XXXX in all exported reports.",
        "In the demo, type any address like user@example.com and the phone field will accept (000) 000-0000.",
        "Dear [First Name], thank you for contacting {company}. Your case number is [Case ID].",
        "The sign-up page asks for a date of birth, but we only store the year to check that users are over 18.",
        "Please don't paste card numbers or passport details into the chat; use the secure form instead.",
        "Our privacy policy explains which personal data we collect and how to request deletion.",
        "Fill in the shipping address on page two and leave the billing address blank if it's the same.",
        "The CSV columns are name, email, phone and postcode; the sample file has only headers and no rows.",
        "CV tips: put your contact details at the top, keep it to two pages, and list your most recent job first.",
    ],
    "reference_numbers": [
        "Ticket {ticket}: the customer reports that the {product} stops charging after {m} minutes; replacement approved under {rma}.",
        "Wire transfers to our company account take {n} business days; please quote invoice {invoice} as the payment reference.",
        "Please reference case {case_id} when you reply, and don't include any card numbers in the email.",
        "The batch number {batch} on the label tells you which factory produced the {product}.",
        "Serial {serial} belongs to the {product} in meeting room {room}; it's due for a firmware update to {version}.",
        "Our IBAN and sort code are printed on every invoice; never pay into an account quoted over the phone.",
        "Transfer details for the charity drive: pay into the {charity} account listed on our website and use reference {ref}.",
        "Account lockouts happen after {n} failed attempts; the lock clears automatically after {m} minutes.",
        "Error code {sku} means the {product} lost its network connection; restart it and try again.",
        "Please dispute card charges through the app or by calling the number printed on the back of your card.",
    ],
    "first_name_only": [
        "Thanks, {first}, the slides look great; let's go through them together on {date}.",
        "{first} said the delivery for order {order_no} arrived a day early, which was a nice surprise.",
        "Can you ask {first} whether the {product} demo is still on for {time}?",
        "{first} from {dept} will cover the front desk while the team is at the offsite on {date}.",
        "Hey {first}, the parcel {tracking} came while you were out, so I left it by the door.",
        "{first} recommended {venue} for the party; apparently parking is easy after {time}.",
        "Please thank {first} for fixing the printer in room {room}, it works perfectly now.",
    ],
    "generic_same_situation": [
        "Hi, I moved flats last month and need to know how to update my delivery address in the app.",
        "Patient intake forms are now digital; bring a photo ID and your insurance card to the appointment.",
        "Lost and found: a blue umbrella and a set of car keys were handed in at reception on {date}.",
        "How do I change the phone number on my account without losing my order history?",
        "Could you tell me what documents I need to renew a passport before a trip in {month}?",
        "The carpool sign-up sheet is in the kitchen; the shuttle leaves from the main entrance at {time}.",
        "Dear customer, your subscription renews on {date}; no action is needed if you want to continue.",
        "To reset your password, click the link we sent to the email address on your account; it expires in {m} minutes.",
        "I'd like to dispute a charge of {amount} on my last statement; what's the usual process?",
        "Volunteers for the {charity} fundraiser should arrive by {time} and bring comfortable shoes.",
    ],
}

HARD_NEG = {"order_tracking", "business_contact", "non_birthday_dates", "placeholders",
            "reference_numbers", "first_name_only"}

FRAMES = [
    "{body}",
    "Forwarded from {dept}: {body}",
    "Note for the file. {body}",
    "Quick one from the shared inbox: {body}",
    "{Message|Email|Chat} received {weekday} at {time}: \"{body}\"",
    "Can you tidy up this message before I send it? {body}",
    "Copied from the support queue: {body}",
    "{body} {Let me know if anything is missing.|Please confirm.|Talk soon.}",
]


def spec():
    g = Grammar(SLOTS)
    return {
        "grammar": g,
        "frames": FRAMES,
        "frame_p": 0.35,
        1: {k: {"templates": v, "hard": False} for k, v in POS.items()},
        0: {k: {"templates": v, "hard": k in HARD_NEG} for k, v in NEG.items()},
    }


README = """\
**Label 1 (`pii`)**: the text carries personal data about an identifiable person: a full name together
with an e-mail address, phone number, street address, date of birth, social-security number, passport
or driving-licence number, card number, IBAN or bank account details, or an ID number tied to a person
(also first-person texts such as "my SSN is ..." with no name). Contexts: chat messages, support
tickets, forms, HR/medical/tenancy records, notes, bookings.

**Label 0 (`no_pii`)**: the same situations without personal data. Hard negatives (`"hard": true`):
order and tracking numbers, product SKUs, error codes, serials, invoice/case/booking references,
public business phone lines and role e-mail addresses (support@..., press@...), public business
addresses, dates that are not birthdays (meetings, deadlines, releases), generic placeholders
([CUSTOMER NAME], XXX-XX-XXXX, user@example.com), and texts that mention only a first name with no
contact data or identifier (treated as negative by design).

All values are synthetic: phone numbers use the fictional 555-01xx range or UK 07700 900xxx drama
numbers, e-mail domains are example.com/.org/.net, SSNs start with 9 (never issued as SSNs),
card numbers use test prefixes (4000, 4111, 4242, 5105, 5500) with random digits, IBANs use
placeholder bank codes, and names are random first/last combinations.
"""
