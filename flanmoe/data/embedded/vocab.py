"""Fixed English word pools and the invented-name generator shared by every part of the suite.

Everything here is a constant or a pure function of a ``random.Random``: no global RNG, no hash().
"""

from __future__ import annotations

import random
import re

# Common nouns by category: classification families, BBH object_counting and the corpus draw from these.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "animal": (
        "cat",
        "dog",
        "horse",
        "cow",
        "goat",
        "rabbit",
        "snake",
        "frog",
        "mouse",
        "pig",
        "fish",
        "duck",
    ),
    "fruit": ("apple", "banana", "peach", "plum", "grape", "melon", "lemon", "cherry", "mango", "pear"),
    "vegetable": (
        "carrot",
        "onion",
        "potato",
        "cabbage",
        "turnip",
        "pepper",
        "yam",
        "cucumber",
        "cauliflower",
    ),
    "instrument": (
        "piano",
        "flute",
        "violin",
        "drum",
        "trumpet",
        "guitar",
        "harp",
        "cello",
        "clarinet",
        "oboe",
    ),
    "vehicle": ("car", "bus", "train", "bicycle", "truck", "boat", "plane", "tram", "van", "scooter"),
    "color": ("red", "blue", "green", "yellow", "black", "white", "brown", "grey", "orange", "purple"),
    "tool": ("hammer", "saw", "drill", "wrench", "shovel", "rake", "chisel", "ladder", "axe"),
    "furniture": ("chair", "table", "bed", "sofa", "desk", "shelf", "stool", "cupboard", "bench"),
}

# Short common words for string manipulation (3-7 letters keeps targets short for a tiny model).
WORDS: tuple[str, ...] = tuple(
    sorted(
        {w for ws in CATEGORIES.values() for w in ws if 3 <= len(w) <= 7}
        | set(
            "sun moon star tree river stone cloud rain snow wind book door house road bread milk "
            "water fire light dark paper pencil window garden forest island market school city "
            "friend mother father sister brother child teacher doctor farmer king queen castle "
            "bridge tower ship sea lake hill field flower leaf seed bird song dance game story "
            "letter number clock time day night summer winter spring autumn money gold silver "
            "iron glass wood salt sugar honey cheese candle lamp box bag hat shoe coat ring "
            "planet rocket engine wheel corner circle square little happy quick bright quiet "
            "green kind brave gentle simple strong warm cold heavy sweet".split()
        )
    )
)

PROFESSIONS = (
    "baker",
    "pilot",
    "doctor",
    "teacher",
    "painter",
    "farmer",
    "sailor",
    "poet",
    "judge",
    "chemist",
    "architect",
    "engineer",
    "tailor",
    "potter",
    "weaver",
    "miner",
)
PRODUCTS = (
    "cheese",
    "glass",
    "silk",
    "clocks",
    "paper",
    "salt",
    "wine",
    "tea",
    "copper",
    "wool",
    "bells",
    "carpets",
    "honey",
    "lanterns",
    "boats",
    "pottery",
)
HABITATS = ("forest", "desert", "ocean", "mountains", "swamp", "grassland", "tundra", "caves")
DIETS = ("herbivore", "carnivore", "omnivore")
STATES = ("solid", "liquid", "gas")
COLORS = CATEGORIES["color"]
INSTRUMENTS = CATEGORIES["instrument"]
LEG_COUNTS = ("two", "four", "six", "eight")
FIRST_NAMES = (
    "Alice",
    "Bob",
    "Claire",
    "Dave",
    "Eve",
    "Fred",
    "Gina",
    "Hank",
    "Ivy",
    "Jack",
    "Kim",
    "Leo",
    "Mia",
    "Ned",
    "Olga",
    "Paul",
    "Rosa",
    "Sam",
    "Tina",
    "Umar",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "tr",
    "sh",
    "gl",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "x")


def number_to_words(n: int) -> str:
    """English words for -999..999, e.g. 42 -> 'forty-two'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return NUMBER_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS_WORDS[tens] + ("-" + NUMBER_WORDS[ones] if ones else "")
    hundreds, rest = divmod(n, 100)
    head = NUMBER_WORDS[hundreds] + " hundred"
    return head + (" and " + number_to_words(rest) if rest else "")


class NameMaker:
    """Invented, pronounceable, unique names (``Toluma``, ``Varnesh``) drawn from one RNG."""

    def __init__(self, rng: random.Random, reserved: set[str] | None = None) -> None:
        self.rng = rng
        # English words are reserved so an invented name never reads as a real word.
        self.used: set[str] = {w.lower() for w in WORDS} | (reserved or set())

    def make(self, min_syll: int = 2, max_syll: int = 3, suffix: str = "") -> str:
        """A new capitalized name of ``min_syll..max_syll`` syllables, never returned before."""
        while True:
            n = self.rng.randint(min_syll, max_syll)
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(n)]
            name = ("".join(parts) + self.rng.choice(_CODAS) + suffix).capitalize()
            if name.lower() not in self.used and 4 <= len(name) <= 11:
                self.used.add(name.lower())
                return name


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def fix_articles(text: str) -> str:
    """'a engineer' -> 'an engineer' (templates write 'a {o}' for any value)."""
    return _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", text)


_IRREGULAR_PLURALS = {"mouse": "mice", "fish": "fish", "piano": "pianos", "cello": "cellos"}


def plural(noun: str) -> str:
    """English plural of a pool noun: 'cherry' -> 'cherries', 'peach' -> 'peaches'."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "sh", "ch", "x", "o")):
        return noun + "es"
    return noun + "s"
