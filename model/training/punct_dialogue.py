"""Everyday, speech-like sentences for the punctuation model, generated from templates written here.

The book sources (Austen, KJV, glosses, fortunes) rarely hold what captions of people talking need
most: questions, short lists with commas ("eggs, milk and bread"), vocatives ("David, can you ..."),
openers that take a comma ("Yes, ...") next to greetings and thanks that take none ("Thank you very
much", "Hello there"), names, "I'm" and contractions, numbers said as words. Every template, word list
and name below was written for this project (no outside text), and the output is deterministic for a
seed. Held-out and evaluation sentences are filtered out by the caller (``punct_data``).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from model.training.text import WORDLIST, number_words, year_words


def _split(text: str, sep: str | None = None) -> list[str]:
    """Word lists are written as running text: easier to read and extend than a column of literals."""
    return text.split(sep)


NAMES = _split(
    "David Maria John Sarah Michael Anna James Emma Peter Laura Tom Lucy Daniel Sophie Paul Kate Mark "
    "Rachel Chris Helen Sam Olivia Ben Grace Alex Julia Ryan Nina Adam Chloe Jack Hannah Luke Megan Oliver "
    "Ella Henry Amy Leo Zoe Oscar Ruth Simon Alice Martin Claire Robert Fiona Steve Jenny Omar Priya Carlos "
    "Yuki Ahmed Ingrid Pablo Mei Kevin Diana Frank Nora Victor Rosa Hugo Irene Ian Tina"
)
SURNAMES = _split("Smith Patel Brown Garcia Miller Wilson Chen Taylor Lopez Murphy Novak Jensen Okafor Rossi")
CITIES = _split(
    "London Paris Berlin Madrid Rome Tokyo Boston Chicago Denver Seattle Dublin Lisbon Vienna Prague Oslo "
    "Toronto Sydney Cairo Mumbai Glasgow Leeds Manchester Houston Atlanta Warsaw Athens Brussels Geneva"
)
COUNTRIES = _split(
    "France Spain Italy Japan Canada Mexico Germany Ireland Portugal Brazil India Kenya Norway"
)
PROPER_SHARE = 0.5  # of {name}, {city} and {surname} draws: a proper noun from the word list instead


@functools.cache
def _wordlist_entries(wordlist: Path) -> tuple[str, ...]:
    """The entries of ``wordlist`` (Debian's wamerican: SCOWL, free licence), empty where not installed."""
    return tuple(wordlist.read_text(errors="replace").split()) if wordlist.exists() else ()


@functools.cache
def proper_nouns(wordlist: Path = WORDLIST) -> tuple[str, ...]:
    """The word list's names of people and places that are never written in lower case ("Gwendolyn",
    "Albuquerque"; not "Bill" or "Rose", which are listed lower case too).

    The hand lists above hold ~150 names: a model trained on them alone learns those words, and leaves
    an unseen name in lower case. Drawn for half the name and place slots, thousands of rare names
    teach it the word list's capital flag and the contexts ("in ...", "with ..."), not the words.
    Empty (the hand lists only) where the word list is not installed.
    """
    entries = _wordlist_entries(wordlist)
    lower = {e for e in entries if e.islower()}
    return tuple(
        e for e in entries if re.fullmatch(r"[A-Z][a-z]{2,}", e) and e.lower() not in lower and e.isascii()
    )


@functools.cache
def _proper_set() -> frozenset[str]:
    return frozenset(proper_nouns())


@functools.cache
def plural_nouns(wordlist: Path = WORDLIST) -> tuple[str, ...]:
    """Short plurals of the word list (the entry and the entry less its "s" both listed in lower case):
    list items beyond the hand lists, so that list commas are learnt from the shape "a, b and c", not
    from the words of ``FOODS`` and ``THINGS``. Some are verbs ("runs"): a list of them is still a list."""
    lower = {e for e in _wordlist_entries(wordlist) if e.islower() and e.isascii()}
    return tuple(sorted(w for w in lower if 4 <= len(w) <= 9 and w.endswith("s") and w[:-1] in lower))


def _items(rng: random.Random, hand: list[str], k: int) -> list[str]:
    pool = plural_nouns()
    if pool and rng.random() < NOUN_LIST_SHARE:
        return rng.sample(pool, k)
    return rng.sample(hand, k)


NOUN_LIST_SHARE = 0.35  # of {foods} and {things} lists: drawn from ``plural_nouns``


def _proper(rng: random.Random, hand: list[str]) -> str:
    pool = proper_nouns()
    return rng.choice(pool) if pool and rng.random() < PROPER_SHARE else rng.choice(hand)


DAYS = _split("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
MONTHS = _split("January February March April May June July August September October November December")
FOODS = _split(
    "eggs milk bread butter cheese apples bananas rice pasta tomatoes onions carrots potatoes coffee tea "
    "sugar flour chicken soup yogurt oranges lettuce beans juice cereal honey"
)
THINGS = _split(
    "keys phone wallet laptop charger umbrella jacket glasses ticket passport bag notebook headphones "
    "remote camera bike helmet scarf receipt map"
)
PLACES = _split(
    "station office library kitchen garden hospital airport bank gym park school cinema market "
    "bakery pharmacy museum hotel restaurant"
)
EVENTS = _split("meeting party concert game dinner lunch wedding interview appointment class rehearsal")
TASKS = _split(
    "call the plumber|book the tickets|clean the kitchen|feed the cat|fix the printer|pay the bill|"
    "send the report|water the plants|pick up the kids|walk the dog|check the email|buy a present|"
    "finish the slides|wash the car|order the pizza|print the forms|change the tyre|answer the phone",
    "|",
)
RELATIVES = _split(
    "mum dad mother father sister brother aunt uncle cousin grandmother grandfather son daughter wife husband"
)
LANGUAGES = _split(
    "English French Spanish German Italian Japanese Chinese Arabic Russian Portuguese Dutch Greek"
)
STREET_KINDS = _split("Street Road Avenue Lane Drive Square Park")
ORDINALS = _split(
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|fourteenth|"
    "fifteenth|eighteenth|twentieth|twenty first|twenty third|twenty fifth|thirtieth",
    "|",
)
COLORS = _split("red blue green yellow black white grey orange purple pink brown")
ANIMALS = _split("dogs cats horses cows sheep rabbits ducks goats lions monkeys bears")
SPORTS = _split("tennis football golf basketball chess hockey volleyball baseball cricket")
SUBJECTS = _split("maths history physics biology chemistry music art geography economics law")
CLOTHES = _split("socks shirts shoes boots jeans sweaters gloves hats towels jackets")
VERBS_PAST = _split("cooked ate talked danced laughed sang played walked swam rested shopped")
ADJECTIVES = _split("cold wet windy sunny warm quiet busy noisy cheap clean small bright")
MEALS = _split("breakfast lunch dinner coffee")
DIRECTIONS = _split("forward|back|backwards|ahead|straight ahead|left|right|up|down|straight on", "|")
SIDES = _split("left right")
UNITS = _split("meters steps feet centimeters inches yards kilometers miles metres")
DEVICES = _split("lights heating radio fan television music oven alarm camera kettle heater")
ROOMS = _split(
    "kitchen|living room|bedroom|hallway|bathroom|garage|office|dining room|basement|front room", "|"
)


def _distance(rng: random.Random) -> str:
    """A spoken distance, the complement a movement command carries ("ten meters", "half a meter")."""
    if rng.random() < 0.1:
        return rng.choice(("half a meter", "a few steps", "one more step", "a little bit", "one meter"))
    n = rng.choice((rng.randint(2, 12), rng.randint(2, 12), rng.randint(13, 100), 5 * rng.randint(3, 40)))
    return f"{number_words(n)} {rng.choice(UNITS)}"


# Share of lists of 3+ items written with a comma before the last "and"/"or" (the Oxford comma).
# Held-out-style everyday text mostly writes none; at 15% the model learnt to put one there.
# The draw is still made at 0 so that the generated text keeps its other random choices.
OXFORD_COMMA_SHARE = 0.0


def _series(items: list[str], conj: str, rng: random.Random) -> str:
    """A list as English writes it: commas between the items, none before the last ``and``."""
    head = ", ".join(items[:-1])
    comma = "," if len(items) > 2 and rng.random() < OXFORD_COMMA_SHARE else ""
    return f"{head}{comma} {conj} {items[-1]}"


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "name": lambda r: _proper(r, NAMES),
    "mr": lambda r: f"{r.choice(('Mr.', 'Mrs.', 'Dr.'))} {_proper(r, SURNAMES)}",
    "surname": lambda r: _proper(r, SURNAMES),
    "city": lambda r: _proper(r, CITIES),
    "street": lambda r: f"{_proper(r, NAMES + CITIES)} {r.choice(STREET_KINDS)}",
    "relative": lambda r: r.choice(RELATIVES),
    "language": lambda r: r.choice(LANGUAGES),
    "ordinal": lambda r: r.choice(ORDINALS),
    "meal": lambda r: r.choice(MEALS),
    "colors": lambda r: _series(r.sample(COLORS, r.choice((2, 3, 3, 4))), r.choice(("and", "or")), r),
    "animals": lambda r: _series(r.sample(ANIMALS, r.choice((3, 3, 4))), "and", r),
    "sports": lambda r: _series(r.sample(SPORTS, r.choice((2, 3, 3))), "and", r),
    "subjects": lambda r: _series(r.sample(SUBJECTS, r.choice((2, 3, 4))), "and", r),
    "clothes": lambda r: _series(r.sample(CLOTHES, r.choice((3, 3, 4))), "and", r),
    "days": lambda r: _series(r.sample(DAYS, r.choice((2, 3, 3))), "and", r),
    "verbs": lambda r: _series(r.sample(VERBS_PAST, r.choice((3, 3, 4))), "and", r),
    "adjs": lambda r: _series(r.sample(ADJECTIVES, r.choice((2, 3, 3))), "and", r),
    "places": lambda r: _series([f"the {p}" for p in r.sample(PLACES, r.choice((2, 3, 3)))], "and", r),
    "country": lambda r: r.choice(COUNTRIES),
    "day": lambda r: r.choice(DAYS),
    "month": lambda r: r.choice(MONTHS),
    "food": lambda r: r.choice(FOODS),
    "thing": lambda r: r.choice(THINGS),
    "place": lambda r: r.choice(PLACES),
    "event": lambda r: r.choice(EVENTS),
    "task": lambda r: r.choice(TASKS),
    "foods": lambda r: _series(_items(r, FOODS, r.choice((2, 3, 3, 4, 5))), "and", r),
    "things": lambda r: _series(_items(r, THINGS, r.choice((3, 3, 4))), r.choice(("and", "or")), r),
    "names": lambda r: _series([_proper(r, NAMES) for _ in range(r.choice((2, 3, 3, 4)))], "and", r),
    "cities": lambda r: _series(
        [_proper(r, CITIES) for _ in range(r.choice((3, 3, 4)))], r.choice(("and", "or")), r
    ),
    "tasks": lambda r: _series(r.sample(TASKS, r.choice((2, 3))), "and", r),
    "num": lambda r: number_words(r.choice((r.randint(2, 20), r.randint(21, 99), r.randint(100, 999)))),
    "small": lambda r: number_words(r.randint(2, 12)),
    "hour": lambda r: number_words(r.randint(1, 12)),
    "clock": lambda r: (
        f"{number_words(r.randint(1, 12))} {r.choice(('thirty', 'fifteen', 'forty five', 'twenty'))}"
    ),
    "year": lambda r: year_words(r.randint(1950, 2025)),
    "dir": lambda r: r.choice(DIRECTIONS),
    "side": lambda r: r.choice(SIDES),
    "dist": _distance,
    "angle": lambda r: f"{number_words(15 * r.randint(1, 12))} degrees",
    "device": lambda r: r.choice(DEVICES),
    "room": lambda r: r.choice(ROOMS),
}

# One sentence per entry, written as it would be printed; {slot} draws from SLOTS.
STATEMENTS = _split(
    "I'm going to the {place} on {day}.|I'll call you when I get to {city}.|I think {name} left the {thing} "
    "in the car.|We need {foods}.|Can you get {foods} on the way home?|I've been working here since "
    "{year}.|It costs {num} dollars.|The train leaves at {clock}.|{name} and {name} are coming to the "
    "{event} on {day}.|My brother lives in {city} now.|We moved to {country} in {year}.|I don't know where "
    "{name} is.|I'd rather stay at home tonight.|It's about {small} minutes from the {place}.|You can't "
    "park outside the {place}.|{name} said the {event} starts at {hour} o'clock.|I haven't seen {name} "
    "since {month}.|We're flying to {city} with {name} in {month}.|I lost my {thing} at the {place}.|The "
    "{event} was moved to {day} afternoon.|We visited {cities} last summer.|Today I have to {tasks}.|You "
    "should bring your {things}.|She's meeting {mr} at the {place}.|{mr} will see you at {hour} "
    "o'clock.|I met {name} at the {place} in {city}.|There are {small} people waiting outside.|{name} "
    "doesn't eat {food}.|I was born in {city} in {year}.|Our flight lands at {clock} on {day}.|We'll need "
    "{num} chairs for the {event}.|That's my favourite {place} in {city}.|I forgot to {task}.|{names} are "
    "already at the {place}.|Please {task} before {day}.|I'll be back in {small} minutes.|It's raining "
    "again in {city}.|The {place} closes at {hour} on {day}.|Don't forget to {task}.|I can't find my "
    "{thing} anywhere.|He's lived in {country} for {small} years.|Let's meet at the {place} at {clock}.",
    "|",
)
QUESTIONS = _split(
    "Where did you put my {thing}?|What time does the {place} open?|How many {food} do we need?|Why is "
    "{name} so late?|Who is coming to the {event} on {day}?|When are you flying to {city}?|Which {thing} "
    "is yours?|How was your trip to {country}?|What did {name} say about the {event}?|Where are we meeting "
    "{name}?|How much is the {food}?|What are you doing on {day}?|Why didn't you {task}?|How long have you "
    "lived in {city}?|Whose {thing} is this?|Can you {task} for me?|Did {name} call you back?|Are you "
    "coming to the {event} tonight?|Is it going to rain in {city} tomorrow?|Do you want some {food}?|Have "
    "you seen my {thing}?|Could you send me the report by {day}?|Would you like {food} or {food}?|Is "
    "{name} still in {city}?|Does {mr} know about the {event}?|Will you be at the {place} on {day}?|Should "
    "I {task} now?|Can I borrow your {thing}?|Are {names} coming too?|Do we need {foods}?|Have you ever "
    "been to {country}?|Was {name} at the {event} yesterday?|Did you remember to {task}?|Is the {place} "
    "open on {day}?|Shall we take the train to {city}?|Do you know where the {place} is?|Isn't {name} "
    "from {city}?|Can you hear me?|Are you ready?|Is everything okay?|What do you think?|Where are you?",
    "|",
)
# more of everyday written English (session 14): family, dates, languages, streets, full names, lists of
# other kinds than food, and "I"/"I'm" inside the sentence
STATEMENTS += _split(
    "My {relative} is coming to visit in {month}.|I'm having {meal} with {name} {surname} on {day}.|{name} "
    "{surname} works at the {place} in {city}.|I usually go to the {place} on {day}s.|The {event} is on "
    "{day} the {ordinal} of {month}.|My birthday is in {month}.|I'm sorry I missed your call.|I think "
    "it's going to rain later.|I'm not sure what time it starts.|{name}'s {relative} lives in {country}.|"
    "We have {num} days left.|I've got {small} tickets for the {event}.|The shop on {street} is closing "
    "down.|I'm going to {city} for {small} days.|He was born on the {ordinal} of {month}.|I'll finish it "
    "by {day}.|I'm learning {language} at the moment.|We spent most of {month} in {country}.|It takes "
    "{small} hours to drive to {city}.|We live on {street} now.|I'm so happy for you.|I don't think "
    "{name} knows yet.|That's not what I meant.|It was nice talking to you.|I'd love to come.|My "
    "favourite colours are {colors}.|We saw {animals} on the farm.|The kids play {sports} after school.|"
    "She teaches {subjects} at the school in {city}.|Pack your {clothes} tonight.|The {place} is open on "
    "{days}.|We {verbs} all evening.|It was {adjs} in {city} last week.|I need to go to {places}.|My "
    "{relative} speaks {language} and {language}.|{name} and I met in {city} in {year}.|I told {name} "
    "that I'm busy on {day}.|{name} thinks I should call {mr}.|The tickets cost {num} pounds each.|Our "
    "office moved to {street} in {month}.|The new {place} opens on the {ordinal} of {month}.|I'm "
    "working from home on {days}.|The {event} went really well.|My phone number has changed.|I'll be "
    "in {city} from {day} to {day}.|We're out of {food} again.|Everyone liked the {food} you made.",
    "|",
)
QUESTIONS += _split(
    "What time is the {event} on {day}?|How do I get to the {place} from here?|Do you know {name} "
    "{surname}?|Did you go to {city} in {month}?|Where do you want to have {meal}?|Is it far from the "
    "{place}?|Can we talk about the {event} later?|Why don't we meet at the {place} instead?|How about "
    "{day} afternoon?|What about {name}?|Has {name} finished the report yet?|When does the {event} "
    "start?|Who's going to {task}?|Are we still meeting on {day}?|Did I leave my {thing} at your place?|"
    "Am I too late?|Is this seat taken?|How old is your {relative} now?|Where did you grow up?|What do "
    "you do for a living?|Which day works for you, {day} or {day}?|Do you want to come with us to {city} "
    "in {month}?|You're coming too, aren't you?|It's on {day}, isn't it?|How's your {relative} doing?|"
    "What's the weather like in {city} in {month}?|Does the {place} on {street} open at {hour} on "
    "{day}s?|Do you speak {language}?|Would you rather play {sports}?|Is {mr} still working at the "
    "{place}?|How many people are coming on {day}?|Was it {adjs} in {country}?|Have you told {name} "
    "about {month}?|Where can I buy {foods}?|What should I bring to the {event}?|Could I call you back "
    "in {small} minutes?|Did {name} and {name} get home okay?|Can I ask you something?|Why is the "
    "{place} closed on {day}?|Are you free on the {ordinal}?",
    "|",
)
# clauses that open a sentence and take a comma after them ("When we got to the station, ...")
INTROS = _split(
    "When I got to the {place}|When we arrived in {city}|If you have time on {day}|If it rains "
    "tomorrow|If you need anything|After the {event}|Before you leave|As soon as {name} gets here|"
    "Because the {place} was closed|Although it was late|While you were at the {place}|Since you're "
    "here|Once the {event} is over|By the time we got home|When I was in {country}|If {name} calls|After "
    "we left the {place}|Before the {event} on {day}|Whenever I go to {city}|Even though I was tired|"
    "Unless you hear from {name}|As I said|If I'm honest|When I'm in {city}|If the {place} is open|When "
    "you see {name}|After {meal}|Before {month}|If we leave at {hour}|When the {event} finished",
    "|",
)
# openers that are words and phrases, also followed by a comma
TRANSITIONS = _split(
    "However|Unfortunately|Luckily|Meanwhile|For example|In fact|Of course|To be honest|In the end|After "
    "that|First of all|Besides|Otherwise|Finally|Still|Instead|Apparently|Basically|Personally|"
    "Hopefully|Obviously|In any case|On the other hand|As a result",
    "|",
)
# clauses that finish such a sentence, or join another with "but" / "so"
MAINS = _split(
    "I'll call you|we can go to the {place}|I'm staying at home|the {event} starts at {hour}|{name} will "
    "pick you up|we should take the train|I'm not sure it's open|you can use my {thing}|I'll send you "
    "the address|we'll meet at the {place} instead|she went straight to bed|he forgot his {thing}|the "
    "kids were already asleep|I'll let you know|everything was fine|we had to wait for {small} hours|I "
    "want to visit {city}|I'm really tired|they cancelled the {event}|it was too late|we took a taxi to "
    "the {place}|{name} was still at work|I couldn't find my {thing}|the {place} was full|I'd like to "
    "come with you|you should ask {name}|it costs {num} dollars|we bought {foods}|I'm meeting {name} on "
    "{day}|the weather was {adjs}",
    "|",
)
SUBORDINATORS = ("When", "If", "After", "Before", "As soon as", "Because", "While", "Once", "Unless", "Since")
CLOSINGS = [c for c in INTROS if c.startswith(SUBORDINATORS)]  # the opening clauses that can also close


def complex_sentence(rng: random.Random) -> str:
    """A sentence of two clauses, punctuated as written English does it: a comma after an opening
    clause or transition ("If you need anything, I'll call you."), none before a closing one ("I'll call
    you if you need anything."), one before "but" / "so" joining two clauses."""
    main = fill(rng.choice(MAINS), rng)
    kind = rng.random()
    if kind < 0.35:
        return f"{fill(rng.choice(INTROS), rng)}, {main}."
    if kind < 0.5:
        return f"{rng.choice(TRANSITIONS)}, {main}."
    if kind < 0.6:  # an opening clause before a question
        return f"{fill(rng.choice(INTROS), rng)}, {_lower_first(fill(rng.choice(QUESTIONS), rng))}"
    if kind < 0.8:
        return f"{main[0].upper()}{main[1:]} {_lower_first(fill(rng.choice(CLOSINGS), rng))}."
    second = fill(rng.choice(MAINS), rng)
    return f"{main[0].upper()}{main[1:]}, {rng.choice(('but', 'but', 'so'))} {second}."


# standalone lines of talk: greetings and thanks, no comma where English writes none. The one- and
# two-word ones ("Let's go.", "Of course.") are drawn rarely: inside a final they taught the model that a
# short imperative is a sentence of its own, and it split real commands ("Go forward. Ten meters.").
FORMULAS = _split(
    "Thank you very much.|Thank you so much for the {thing}.|Thank you for your help.|Thanks for coming "
    "today.|See you on {day}.|Nice to meet you.|Have a nice weekend.|Sorry I'm late.|See you later then.|"
    "Thank you all for being here.|Thanks very much for the {food}.|Hold on a second.|Good morning "
    "everyone.|Have a good trip to {city}.|Thanks for the lift.|Let me think about it.|I'll "
    "see you at the {place}.|Good luck with the {event}.|That sounds like a plan.",
    "|",
)
SHORT_FORMULAS = _split(
    "Thanks a lot.|Hello there.|Hi there.|Good morning.|Good afternoon.|Good night.|See you later.|No problem.|You're "
    "welcome.|Excuse me.|Take care.|Happy birthday.|Welcome back.|Well done.|Let's go.|I'm sorry.|I see.|"
    "That's fine.|Not yet.|Me too.|Of course.",
    "|",
)
SHORT_FORMULA_SHARE = 0.15  # of the formulas: ~2% of all sentences (was ~10%)
# commands as they are spoken to a device or a person, the complement joined to the verb in one sentence
# ("Go forward ten meters.", "Turn left ninety degrees and stop.")
COMMANDS = _split(
    "Go {dir} {dist}.|Move {dir} {dist}.|Go {dir} {dist} and stop.|Turn {side} and go {dist}.|Turn {side} "
    "{angle}.|Turn around and go back {dist}.|Walk {dir} {dist}.|Drive {dir} for {dist}.|Go {dir} {dist} "
    "then turn {side}.|Move {dir} {dist} and wait there.|Stop after {dist}.|Back up {dist}.|Go back "
    "{dist}.|Come {dir} {dist}.|Wait {small} seconds and then go {dir}.|Turn on the {device} in the "
    "{room}.|Turn the {device} off.|Turn off the {device} please.|Switch the {device} on.|Set the {device} "
    "to {small}.|Set a timer for {num} minutes.|Play some music in the {room}.|Call {name} back.|Call "
    "{name} at {clock}.|Remind me to {task} on {day}.|Open the door to the {room}.|Close the window in the "
    "{room}.|Take the {thing} to the {place}.|Bring me my {thing} from the {room}.|Put the {thing} on the "
    "table.|Go to the {room} and wait there.|Pick up the {thing} and bring it here.|Slow down a little.|"
    "Speed up a bit.|Keep going straight for {dist}.|Go a little further {dir}.|Stop right there.|Come "
    "back here now.|Turn the volume up to {small}.|Turn it down a little.|Look to the {side}.|Check the "
    "{thing} again.|Go {dir} {dist} and turn {side}.|Move the {thing} {dist} to the {side}.|Rotate "
    "{angle} to the {side}.|Drive {dist} and park near the {place}.|Go up {small} floors.|Go {dir} until "
    "you reach the {place}.",
    "|",
)
OPENERS = _split("Yes|No|Well|Okay|Oh|Sure|Actually|Sorry|Right|Look|Honestly|By the way|Anyway|Alright", "|")
VOCATIVE_OPENERS = _split("Hi|Hello|Thanks|Thank you|Good morning|Sorry|Excuse me|Goodbye", "|")
EXCLAIMS = _split(
    "Watch out!|Come on!|That's great!|Hurry up!|Happy birthday, {name}!|Wow!|Look at that!|That was "
    "amazing!|What a lovely day!",
    "|",
)

_SLOT = re.compile(r"\{(\w+)\}")
KEEP_CAPITAL = frozenset(
    NAMES + SURNAMES + CITIES + COUNTRIES + DAYS + MONTHS + LANGUAGES + ["Mr.", "Mrs.", "Dr."]
)


def fill(template: str, rng: random.Random) -> str:
    return _SLOT.sub(lambda m: SLOTS[m.group(1)](rng), template)


def _lower_first(sentence: str) -> str:
    """The sentence with its first word in lower case, unless that word keeps its capital anywhere."""
    first = sentence.split()[0]
    word = first.rstrip(",.?!")
    if word.endswith("'s"):
        word = word[:-2]
    if word in KEEP_CAPITAL or word in _proper_set() or word == "I" or word.startswith("I'"):
        return sentence
    return sentence[0].lower() + sentence[1:]


def sentence(rng: random.Random) -> str:
    """One spoken sentence: a statement, question, command or formula, sometimes with an opener or a
    vocative."""
    kind = rng.random()
    if kind < 0.3:
        s = fill(rng.choice(STATEMENTS), rng)
    elif kind < 0.42:
        return complex_sentence(rng)
    elif kind < 0.66:
        s = fill(rng.choice(QUESTIONS), rng)
    elif kind < 0.78:
        s = fill(rng.choice(COMMANDS), rng)
    elif kind < 0.96:
        short = rng.random() < SHORT_FORMULA_SHARE
        return fill(rng.choice(SHORT_FORMULAS if short else FORMULAS), rng)
    else:
        return fill(rng.choice(EXCLAIMS), rng)
    extra = rng.random()
    if extra < 0.12:  # "David, can you ...?"
        s = f"{_proper(rng, NAMES)}, {_lower_first(s)}"
    elif extra < 0.2:  # "... on Friday, Anna?"
        s = f"{s[:-1]}, {_proper(rng, NAMES)}{s[-1]}"
    elif extra < 0.32:  # "Yes, I ..." / "Well, ..."
        s = f"{rng.choice(OPENERS)}, {_lower_first(s)}"
    elif extra < 0.34:  # "Hi Maria, ..." written "Hi, Maria." as its own sentence (rare: two words)
        s = f"{rng.choice(VOCATIVE_OPENERS)}, {_proper(rng, NAMES)}. {s}"
    return s


# Session 15: shapes of everyday written English the development errors showed missing (lists of noun
# phrases with their own determiners, a short time phrase opening a sentence without a comma, a name as
# the subject of the first word, longer questions). Drawn from their own random stream
# (``written_sentence``), so the draws of the templates above are unchanged.
SINGULAR_THINGS = _split(
    "kettle|tent|lamp|torch|sandwich|chair|blanket|toaster|mirror|pillow|bucket|ladder|suitcase|notebook|"
    "towel|jar of honey|loaf of bread|bottle of water|bunch of flowers|pair of gloves|packet of biscuits|"
    "cup of tea|box of matches|roll of tape|bag of rice|tin of paint|new battery|spare key|cheap radio|"
    "small table|warm coat|sleeping bag",
    "|",
)
QUANTITIES = _split("two|three|four|five|six|ten|twelve|some|a few|a couple of|lots of|a dozen", "|")


def _plural(noun: str) -> str:
    return f"{noun}es" if noun.endswith(("ch", "sh", "x", "s")) else f"{noun}s"


def _noun_phrase(rng: random.Random) -> str:
    """One list item with its own determiner: "a kettle", "two sleeping bags", "some tomatoes"."""
    if rng.random() < 0.45:
        thing = rng.choice(SINGULAR_THINGS)
        return f"{'an' if thing[0] in 'aeiou' else 'a'} {thing}"
    countable = [f for f in FOODS if f.endswith("s")] + CLOTHES + ANIMALS
    plural = rng.choice(countable + [_plural(t) for t in SINGULAR_THINGS if " " not in t])
    return f"{rng.choice(QUANTITIES)} {plural}"


def _noun_phrases(rng: random.Random) -> str:
    return _series(
        [_noun_phrase(rng) for _ in range(rng.choice((2, 3, 3, 4)))], rng.choice(("and", "and", "or")), rng
    )


SLOTS["nps"] = _noun_phrases
# short time phrases written without a comma before the clause they open ("Yesterday I ...")
TIME_OPENERS = _split(
    "Yesterday|Today|Tomorrow|Tonight|This morning|This evening|Last night|Last week|Last year|Next week|"
    "Next month|Next year|On {day}|On {day} morning|In {month}|Every {day}|At the weekend|Later today|"
    "Last {month}|Every summer|In {year}",
    "|",
)
SUBJECT_CLAUSES = _split(
    "I {past} the {thing}|we {past} the car at the {place}|I'm meeting {name} in {city}|we usually visit my "
    "{relative}|I have to {task}|{name} is flying to {city}|my {relative} called from {country}|the "
    "{place} is closed|we're going to {city}|I finally found my {thing}|{name} started a new job|it rained "
    "all day in {city}|the kids are staying with {name}|I'll be working from home|we saw {name} at the "
    "{event}|my {relative} is cooking {meal}|the {event} starts at {hour}|I stayed in and read a book",
    "|",
)
PAST_VERBS = _split("lost found fixed cleaned sold painted borrowed returned moved washed")
NAME_SUBJECT = _split(
    "{name} speaks {language}, {language} and {language}.|{name} grows {foods} in the garden.|{name} "
    "plays {sports} on {days}.|{name} lives in {city} with her {relative}.|{name} called me from {city} "
    "last night.|{name} never eats {food} after {meal}.|{name} {surname} moved to {country} in {year}.|"
    "{name} and her {relative} run a small {place} in {city}.|{name} wants {nps} for her birthday.|{name} "
    "bought {nps} at the market.|{name} works at the {place} on {street}.|{name} teaches {subjects} in "
    "{city}.",
    "|",
)
NP_LISTS = _split(
    "We need {nps}.|I bought {nps}.|She ordered {nps}.|Don't forget {nps}.|Could you bring {nps}?|We "
    "packed {nps}.|The shop had no {food} left, only {nps}.|For the trip we took {nps}.|Did you see {nps} "
    "in the {room}?|I found {nps} in the {room}.|He gave me {nps} for my birthday.|They sell {nps} at "
    "the {place} on {street}.|Get {nps} on the way home, please.|My bag holds {nps}.",
    "|",
)
LONG_QUESTIONS = _split(
    "Do you think {name} will {task} before {day}?|Could you tell {name} that the {event} starts at "
    "{hour}?|Have you asked {name} whether the {place} opens on {day}s?|Did anyone remember to {task} "
    "while we were in {city}?|Would it be okay if I brought my {relative} to the {event}?|Where did "
    "{name} say the {event} was going to be?|Why didn't anyone tell me the {place} was closed on {day}?|"
    "Can you check if the {place} on {street} is still open?|What time did {name} leave the {place} last "
    "night?|Which {place} did {name} recommend in {city}?|Do you want {nps} or just {food}?|Have you "
    "finished the {thing} or do you need more time?|Are you going to {city} by train or by car?",
    "|",
)


def written_sentence(rng: random.Random) -> str:
    """One sentence of the session-15 shapes."""
    kind = rng.random()
    if kind < 0.3:
        opener = fill(rng.choice(TIME_OPENERS), rng)
        clause = fill(rng.choice(SUBJECT_CLAUSES).replace("{past}", rng.choice(PAST_VERBS)), rng)
        return f"{opener} {clause}."
    if kind < 0.55:
        return fill(rng.choice(NAME_SUBJECT), rng)
    if kind < 0.8:
        return fill(rng.choice(NP_LISTS), rng)
    return fill(rng.choice(LONG_QUESTIONS), rng)


WRITTEN_PER_STRETCH = (0, 1, 1, 2, 2)  # session-15 sentences added to a stretch of talk (one drawn)


def instructions(rng: random.Random) -> list[str]:
    """A run of 2-6 commands, as someone directing a robot or a driver says them."""
    return [fill(rng.choice(COMMANDS), rng) for _ in range(rng.randint(2, 6))]


INSTRUCTION_SHARE = 0.1  # stretches that are a run of commands only


def dialogue_paragraphs(
    n: int, seed: int = 11, keep: Callable[[str], bool] = lambda s: True
) -> Iterator[list[str]]:
    """``n`` stretches of talk of 4-10 sentences each; sentences for which ``keep`` is false are dropped."""
    rng = random.Random(seed)
    extra = random.Random(seed * 7919 + 15)  # the session-15 sentences: their own stream
    for _ in range(n):
        if rng.random() < INSTRUCTION_SHARE:
            talk = [s for s in instructions(rng) if keep(s)]
        else:
            talk = [s for s in (sentence(rng) for _ in range(rng.randint(4, 10))) if keep(s)]
            for _ in range(extra.choice(WRITTEN_PER_STRETCH)):
                written = written_sentence(extra)
                if keep(written):
                    talk.insert(extra.randint(0, len(talk)), written)
        if talk:
            yield talk
