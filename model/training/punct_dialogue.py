"""Everyday, speech-like sentences for the punctuation model, generated from templates written here.

The book sources (Austen, KJV, glosses, fortunes) rarely hold what captions of people talking need
most: questions, short lists with commas ("eggs, milk and bread"), vocatives ("David, can you ..."),
openers that take a comma ("Yes, ...") next to greetings and thanks that take none ("Thank you very
much", "Hello there"), names, "I'm" and contractions, numbers said as words. Every template, word list
and name below was written for this project (no outside text), and the output is deterministic for a
seed. Held-out and evaluation sentences are filtered out by the caller (``punct_data``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

from model.training.text import number_words, year_words


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


def _series(items: list[str], conj: str, rng: random.Random) -> str:
    """A list as English writes it: commas between the items, mostly none before the last ``and``."""
    head = ", ".join(items[:-1])
    comma = "," if len(items) > 2 and rng.random() < 0.15 else ""
    return f"{head}{comma} {conj} {items[-1]}"


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "name": lambda r: r.choice(NAMES),
    "mr": lambda r: f"{r.choice(('Mr.', 'Mrs.'))} {r.choice(SURNAMES)}",
    "city": lambda r: r.choice(CITIES),
    "country": lambda r: r.choice(COUNTRIES),
    "day": lambda r: r.choice(DAYS),
    "month": lambda r: r.choice(MONTHS),
    "food": lambda r: r.choice(FOODS),
    "thing": lambda r: r.choice(THINGS),
    "place": lambda r: r.choice(PLACES),
    "event": lambda r: r.choice(EVENTS),
    "task": lambda r: r.choice(TASKS),
    "foods": lambda r: _series(r.sample(FOODS, r.choice((2, 3, 3, 4, 5))), "and", r),
    "things": lambda r: _series(r.sample(THINGS, r.choice((3, 3, 4))), r.choice(("and", "or")), r),
    "names": lambda r: _series(r.sample(NAMES, r.choice((2, 3, 3, 4))), "and", r),
    "cities": lambda r: _series(r.sample(CITIES, r.choice((3, 3, 4))), r.choice(("and", "or")), r),
    "tasks": lambda r: _series(r.sample(TASKS, r.choice((2, 3))), "and", r),
    "num": lambda r: number_words(r.choice((r.randint(2, 20), r.randint(21, 99), r.randint(100, 999)))),
    "small": lambda r: number_words(r.randint(2, 12)),
    "hour": lambda r: number_words(r.randint(1, 12)),
    "clock": lambda r: (
        f"{number_words(r.randint(1, 12))} {r.choice(('thirty', 'fifteen', 'forty five', 'twenty'))}"
    ),
    "year": lambda r: year_words(r.randint(1950, 2025)),
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
# standalone lines of talk: greetings and thanks, no comma where English writes none
FORMULAS = _split(
    "Thank you very much.|Thank you so much for the {thing}.|Thanks a lot.|Thank you for your help.|Thanks "
    "for coming.|Hello there.|Hi there.|Good morning.|Good afternoon.|Good night.|See you later.|See you on "
    "{day}.|Nice to meet you.|Have a nice weekend.|Sorry I'm late.|No problem.|You're welcome.|Excuse me.|"
    "Take care.|Happy birthday.|Welcome back.|Well done.|Let's go.|I'm sorry.|I see.|That's fine.|Not yet.|"
    "Me too.|Of course.|Hold on a second.|Thank you all for being here.|Thanks very much for the {food}.",
    "|",
)
OPENERS = _split("Yes|No|Well|Okay|Oh|Sure|Actually|Sorry|Right|Look|Honestly|By the way|Anyway|Alright", "|")
VOCATIVE_OPENERS = _split("Hi|Hello|Thanks|Thank you|Good morning|Sorry|Excuse me|Goodbye", "|")
EXCLAIMS = _split(
    "Watch out!|Come on!|That's great!|Hurry up!|Happy birthday, {name}!|Wow!|Look at that!", "|"
)

_SLOT = re.compile(r"\{(\w+)\}")
KEEP_CAPITAL = frozenset(NAMES + SURNAMES + CITIES + COUNTRIES + DAYS + MONTHS + ["Mr.", "Mrs."])


def fill(template: str, rng: random.Random) -> str:
    return _SLOT.sub(lambda m: SLOTS[m.group(1)](rng), template)


def _lower_first(sentence: str) -> str:
    """The sentence with its first word in lower case, unless that word keeps its capital anywhere."""
    first = sentence.split()[0]
    word = first.rstrip(",.?!")
    if word in KEEP_CAPITAL or word == "I" or word.startswith("I'"):
        return sentence
    return sentence[0].lower() + sentence[1:]


def sentence(rng: random.Random) -> str:
    """One spoken sentence: a statement, question or formula, sometimes with an opener or a vocative."""
    kind = rng.random()
    if kind < 0.4:
        s = fill(rng.choice(STATEMENTS), rng)
    elif kind < 0.75:
        s = fill(rng.choice(QUESTIONS), rng)
    elif kind < 0.95:
        return fill(rng.choice(FORMULAS), rng)
    else:
        return fill(rng.choice(EXCLAIMS), rng)
    extra = rng.random()
    if extra < 0.12:  # "David, can you ...?"
        s = f"{rng.choice(NAMES)}, {_lower_first(s)}"
    elif extra < 0.2:  # "... on Friday, Anna?"
        s = f"{s[:-1]}, {rng.choice(NAMES)}{s[-1]}"
    elif extra < 0.32:  # "Yes, I ..." / "Well, ..."
        s = f"{rng.choice(OPENERS)}, {_lower_first(s)}"
    elif extra < 0.38:  # "Hi Maria, ..." written "Hi, Maria." as its own sentence
        s = f"{rng.choice(VOCATIVE_OPENERS)}, {rng.choice(NAMES)}. {s}"
    return s


def dialogue_paragraphs(
    n: int, seed: int = 11, keep: Callable[[str], bool] = lambda s: True
) -> Iterator[list[str]]:
    """``n`` stretches of talk of 4-10 sentences each; sentences for which ``keep`` is false are dropped."""
    rng = random.Random(seed)
    for _ in range(n):
        talk = [s for s in (sentence(rng) for _ in range(rng.randint(4, 10))) if keep(s)]
        if talk:
            yield talk
