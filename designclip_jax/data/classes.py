"""The label schemes a model is trained and evaluated on, each with its classes in one fixed order: the 33
USPC design classes (D1–D30, D32, D34, D99) and the Locarno classes (01–32 and 99); the normal forms of USPC
and Locarno codes as the USPTO's files write them."""

from __future__ import annotations

import dataclasses
import re

# (code, name, IMPACT training-set size). The sizes are the long-tail profile the synthetic set
# imitates; those readable in the paper's figure are exact, the rest interpolated (protocols.md §2).
USPC_DESIGN_CLASSES: tuple[tuple[str, str, int], ...] = (
    ('D1', 'Edible products', 1030),
    ('D2', 'Apparel and haberdashery', 9800),
    ('D3', 'Travel goods, personal belongings, and flat articles', 8200),
    ('D4', 'Brushware', 2100),
    ('D5', 'Textile or paper yard goods', 1082),
    ('D6', 'Furnishings', 17789),
    ('D7', 'Equipment for preparing or serving food or drink', 15861),
    ('D8', 'Tools and hardware', 13200),
    ('D9', 'Packages and containers for goods', 9400),
    ('D10', 'Measuring, testing or signaling instruments', 6100),
    ('D11', 'Jewelry, symbolic insignia, and ornaments', 7300),
    ('D12', 'Transportation', 12800),
    ('D13', 'Equipment for production, distribution, or transformation of energy', 7900),
    ('D14', 'Recording, communication, or information retrieval equipment', 41007),
    ('D15', 'Machines not elsewhere specified', 5600),
    ('D16', 'Photography and optical equipment', 3300),
    ('D17', 'Musical instruments', 745),
    ('D18', 'Printing and office machinery', 1900),
    ('D19', "Office supplies; artists' and teachers' materials", 2600),
    ('D20', 'Sales and advertising equipment', 1401),
    ('D21', 'Games, toys and sports goods', 11400),
    ('D22', 'Arms, pyrotechnics, hunting and fishing equipment', 3600),
    ('D23', 'Environmental heating and cooling, fluid handling and sanitary equipment', 14548),
    ('D24', 'Medical and laboratory equipment', 16785),
    ('D25', 'Building units and construction elements', 6800),
    ('D26', 'Lighting', 10600),
    ('D27', "Tobacco and smokers' supplies", 2300),
    ('D28', 'Cosmetic products and toilet articles', 8100),
    ('D29', 'Equipment for safety, protection, and rescue', 3000),
    ('D30', 'Animal husbandry', 4200),
    ('D32', 'Washing, cleaning, or drying machines', 2800),
    ('D34', 'Material or article handling equipment', 3900),
    ('D99', 'Miscellaneous', 642),
)
CLASS_CODES: tuple[str, ...] = tuple(c for c, _, _ in USPC_DESIGN_CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(n for _, n, _ in USPC_DESIGN_CLASSES)
NUM_CLASSES = len(CLASS_CODES)
_INDEX = {code: i for i, code in enumerate(CLASS_CODES)}

# 'D' + a two-character, space-padded class number + subclass: 'D14486' is D14/486, 'D 4138' is D4/138;
# or the normal form 'D4/138'.
_USPC = re.compile(r'^\s*D(\d\d| \d|\d(?=/))')


def class_index(uspc: str) -> int:
  """Index of the primary (first-listed) USPC design class of an IMPACT ``class`` field.

  Raises ValueError for strings that are not design classes or name a class that does not exist.
  """
  primary = uspc.split(',')[0]
  m = _USPC.match(primary)
  if not m:
    raise ValueError(f'{uspc!r} is not a USPC design class string (expected e.g. "D14486", "D 2728" or "D2/728")')
  code = f'D{int(m.group(1))}'
  if code not in _INDEX:
    raise ValueError(f'{uspc!r} names design class {code}, which is not one of the 33 USPC design classes')
  return _INDEX[code]


# USPC as the USPTO's XML writes it: a 3-character class, a 3-character subclass, then digits after the
# subclass's decimal point or a letter, spaces padding either part ('D28 47' D28/47, 'D 2731' D2/731,
# ' D74012' D7/401.2, '2064595' 206/459.5, 'D14138 G' D14/138G). A leading space shifts the 'D' right
# (' D9727' is D9/727): the rule of the USPTO's own parser (PatentPublicData, UspcClassification.fromText).
_USPC_FIXED = re.compile(r'^((?:D|[0-9 ])[0-9 ][0-9])([0-9 ]{3})([0-9]*)\s*([A-Z]*)$')


def uspc_code(text: str) -> str:
  """The normal form 'D28/47' of one USPC classification string; ValueError if it has none."""
  fixed = re.sub(r'^ (D)(\d)', r'\1 \2', text.rstrip()) if text.startswith(' D') else text.rstrip()
  m = _USPC_FIXED.match(fixed)
  if not m or not m.group(2).strip():
    raise ValueError(f'{text!r} is not a USPC classification')
  klass, sub, decimals, letters = m.groups()
  klass = 'D' + str(int(klass[1:].replace(' ', '0'))) if klass[0] == 'D' else str(int(klass.replace(' ', '0')))
  return f'{klass}/{int(sub.replace(" ", "0"))}{"." + decimals if decimals else ""}{letters}'


# Locarno class headings (the International Classification for Industrial Designs), as WIPO's LOCPUB lists
# them for the 13th (2021) and 14th (2023) editions: https://locpub.wipo.int/enfr/?notion=class_headings&
# version=20230101 (classes 1-6 checked against LOCPUB's 20210101 page; 1-32 against two independent
# transcriptions of the list). Earlier editions named a few classes differently (11th: 9 'Packages and
# containers ...', 14 'Recording, communication or information retrieval equipment'); a transcription of the
# 15th (2025) adds interiors and exteriors to class 32 (new subclass 32-02), not verified against WIPO.
# Class 99 (Miscellaneous, subclass 99-00) holds goods no class names; grants carry it, so it is a class here.
LOCARNO_CLASSES: tuple[tuple[str, str], ...] = (
    ('01', 'Foodstuffs'),
    ('02', 'Articles of clothing and haberdashery'),
    ('03', 'Travel goods, cases, parasols and personal belongings, not elsewhere specified'),
    ('04', 'Brushware'),
    ('05', 'Textile piece goods, artificial and natural sheet material'),
    ('06', 'Furnishing'),
    ('07', 'Household goods, not elsewhere specified'),
    ('08', 'Tools and hardware'),
    ('09', 'Packaging and containers for the transport or handling of goods'),
    ('10', 'Clocks and watches and other measuring instruments, checking and signalling instruments'),
    ('11', 'Articles of adornment'),
    ('12', 'Means of transport or hoisting'),
    ('13', 'Equipment for production, distribution or transformation of electricity'),
    ('14', 'Recording, telecommunication or data processing equipment'),
    ('15', 'Machines, not elsewhere specified'),
    ('16', 'Photographic, cinematographic and optical apparatus'),
    ('17', 'Musical instruments'),
    ('18', 'Printing and office machinery'),
    ('19', "Stationery and office equipment, artists' and teaching materials"),
    ('20', 'Sales and advertising equipment, signs'),
    ('21', 'Games, toys, tents and sports goods'),
    ('22', 'Arms, pyrotechnic articles, articles for hunting, fishing and pest killing'),
    ('23', 'Fluid distribution equipment, sanitary, heating, ventilation and air-conditioning equipment, solid fuel'),
    ('24', 'Medical and laboratory equipment'),
    ('25', 'Building units and construction elements'),
    ('26', 'Lighting apparatus'),
    ('27', "Tobacco and smokers' supplies"),
    ('28', 'Pharmaceutical and cosmetic products, toilet articles and apparatus'),
    ('29', 'Devices and equipment against fire hazards, for accident prevention and for rescue'),
    ('30', 'Articles for the care and handling of animals'),
    ('31', 'Machines and appliances for preparing food or drink, not elsewhere specified'),
    ('32', 'Graphic symbols and logos, surface patterns, ornamentation'),
    ('99', 'Miscellaneous'),
)


@dataclasses.dataclass(frozen=True)
class LabelScheme:
  """The classes a model's labels index: codes and names in label order."""
  name: str
  codes: tuple[str, ...]
  names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.codes)


USPC = LabelScheme('uspc', CLASS_CODES, CLASS_NAMES)
LOCARNO = LabelScheme('locarno', tuple(c for c, _ in LOCARNO_CLASSES), tuple(n for _, n in LOCARNO_CLASSES))
LABEL_SCHEMES = {s.name: s for s in (USPC, LOCARNO)}
NO_LABEL = -1  # a record its scheme cannot label (no Locarno code): never trained on or scored under that scheme
_LOCARNO_INDEX = {code: i for i, code in enumerate(LOCARNO.codes)}


def label_scheme(name: str) -> LabelScheme:
  if name not in LABEL_SCHEMES:
    raise ValueError(f'label scheme {name!r} is not one of {sorted(LABEL_SCHEMES)}')
  return LABEL_SCHEMES[name]


def locarno_class_index(code: str) -> int:
  """Index in ``LOCARNO`` of the class of a normal-form code ('28-03' -> class 28); NO_LABEL for ''."""
  if not code:
    return NO_LABEL
  if code[:2] not in _LOCARNO_INDEX:
    raise ValueError(f'{code!r} names Locarno class {code[:2]}, which is not one of {", ".join(LOCARNO.codes)}')
  return _LOCARNO_INDEX[code[:2]]


# Locarno: 32 classes (01-32) and 99 (miscellaneous), each with subclasses; written '2803' or '28-03'.
def locarno_code(text: str) -> str:
  """The normal form 'CC-SS' of a Locarno class-subclass code ('2803', '28-03', '28 03'); ValueError
  for anything else (a class outside 01-32 and 99 included)."""
  digits = re.sub(r'[\s-]', '', text)
  if not re.fullmatch(r'\d{4}', digits) or not (1 <= int(digits[:2]) <= 32 or digits[:2] == '99'):
    raise ValueError(f'{text!r} is not a Locarno class-subclass code (e.g. "2803")')
  return f'{digits[:2]}-{digits[2:]}'
