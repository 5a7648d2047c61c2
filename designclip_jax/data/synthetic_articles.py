"""What the synthetic patents depict and how they are classified: per USPC class two articles (the
object families the titles, captions, Locarno codes and the citation model share), their Locarno
class-subclass, captions, and how many patents each class gets.

The Locarno codes are this generator's choice, made to agree with the USPC class of each article
(e.g. D28 razor -> 28-03 toilet articles; D28 cosmetic case -> 03-01 cases for their contents; D7
blender -> 31-00 machines for preparing food), using subclasses of Locarno's 10th-13th editions.
"""

from __future__ import annotations

import numpy as np

from designclip_jax.data.classes import USPC_DESIGN_CLASSES
from designclip_jax.data.synthetic_drawing import Part

# Object nouns per class, used for titles and captions.
NOUNS: dict[str, tuple[str, ...]] = {
    'D1': ('candy bar', 'pastry'), 'D2': ('shoe', 'hat'), 'D3': ('handbag', 'wallet'), 'D4': ('toothbrush', 'brush'),
    'D5': ('fabric panel', 'paper sheet'), 'D6': ('chair', 'table'), 'D7': ('kettle', 'blender'),
    'D8': ('wrench', 'hinge'), 'D9': ('bottle', 'container'), 'D10': ('thermometer', 'meter'),
    'D11': ('pendant', 'ring'), 'D12': ('wheel', 'vehicle'), 'D13': ('battery charger', 'power adapter'),
    'D14': ('smartphone', 'speaker'), 'D15': ('machine housing', 'pump'), 'D16': ('camera', 'lens'),
    'D17': ('guitar', 'drum'), 'D18': ('printer', 'label maker'), 'D19': ('pen', 'stapler'),
    'D20': ('display stand', 'vending machine'), 'D21': ('toy', 'game piece'), 'D22': ('fishing reel', 'holster'),
    'D23': ('faucet', 'fan'), 'D24': ('syringe', 'inhaler'), 'D25': ('building panel', 'brick'),
    'D26': ('lamp', 'light fixture'), 'D27': ('vaporizer', 'ashtray'), 'D28': ('razor', 'cosmetic case'),
    'D29': ('helmet', 'respirator'), 'D30': ('pet feeder', 'animal cage'), 'D32': ('washing machine', 'mop'),
    'D34': ('cart', 'hand truck'), 'D99': ('ornament', 'novelty article'),
}
FUNCTIONS = {code: name.lower() for code, name, _ in USPC_DESIGN_CLASSES}
# Locarno class-subclass ('CCSS', as <classification-locarno><main-classification> writes it) per article.
LOCARNO: dict[str, str] = {
    'candy bar': '0101', 'pastry': '0101', 'shoe': '0204', 'hat': '0203', 'handbag': '0301', 'wallet': '0301',
    'toothbrush': '0402', 'brush': '0401', 'fabric panel': '0505', 'paper sheet': '0506', 'chair': '0601',
    'table': '0603', 'kettle': '0702', 'blender': '3100', 'wrench': '0805', 'hinge': '0806', 'bottle': '0901',
    'container': '0903', 'thermometer': '1004', 'meter': '1005', 'pendant': '1101', 'ring': '1101',
    'wheel': '1216', 'vehicle': '1208', 'battery charger': '1302', 'power adapter': '1303',
    'smartphone': '1403', 'speaker': '1401', 'machine housing': '1599', 'pump': '1502', 'camera': '1601',
    'lens': '1606', 'guitar': '1703', 'drum': '1704', 'printer': '1802', 'label maker': '1802', 'pen': '1906',
    'stapler': '1902', 'display stand': '2002', 'vending machine': '2001', 'toy': '2101', 'game piece': '2101',
    'fishing reel': '2205', 'holster': '2201', 'faucet': '2301', 'fan': '2304', 'syringe': '2402',
    'inhaler': '2401', 'building panel': '2502', 'brick': '2501', 'lamp': '2605', 'light fixture': '2603',
    'vaporizer': '2701', 'ashtray': '2703', 'razor': '2803', 'cosmetic case': '0301', 'helmet': '2902',
    'respirator': '2902', 'pet feeder': '3003', 'animal cage': '3002', 'washing machine': '1505', 'mop': '0401',
    'cart': '1202', 'hand truck': '1202', 'ornament': '1102', 'novelty article': '9900',
}
NUMBER_WORDS = ('no', 'one', 'two', 'three', 'four', 'five', 'six')


def describe(parts: list[Part]) -> str:
  body = parts[0]
  sx, sy, sz = body.size
  height = 'tall' if sy > 1.3 * max(sx, sz) else 'flat' if sy < 0.6 * max(sx, sz) else 'compact'
  shape = {'box': 'rectangular', 'cylinder': 'cylindrical', 'cone': 'tapered', 'sphere': 'rounded',
           'ring': 'ring-shaped'}[body.kind]
  extras = [p.kind for p in parts[1:]]
  if not extras:
    return f'It has a {height} {shape} body with no attachments.'
  counts = {k: extras.count(k) for k in dict.fromkeys(extras)}
  nouns = {'box': 'rectangular block', 'cylinder': 'cylindrical post', 'cone': 'conical tip',
           'sphere': 'round knob', 'ring': 'circular ring'}
  words = ', '.join(f'{n} {nouns[k]}{"s" if n > 1 else ""}' for k, n in counts.items())
  return f'It has a {height} {shape} body with {words} attached.'


def caption(noun: str, parts: list[Part], code: str) -> str:
  """The IMPACT-style caption (the real ones were written by LLaVA from the front-page drawing)."""
  article = 'an' if noun[0] in 'aeiou' else 'a'
  return (f' The image is a black and white line drawing of {article} {noun}. {describe(parts)} '
          f'The drawing shows {NUMBER_WORDS[len(parts)]} main parts. '
          f'Its function relates to {FUNCTIONS[code]}.')


def class_counts(n_patents: int, min_per_class: int = 3) -> np.ndarray:
  """Patents per class following IMPACT's long tail (largest remainder), at least ``min_per_class``."""
  sizes = np.array([n for _, _, n in USPC_DESIGN_CLASSES], float)
  spare = n_patents - min_per_class * len(sizes)
  if spare < 0:
    raise ValueError(f'--patents must be at least {min_per_class * len(sizes)} ({min_per_class} per class)')
  share = sizes / sizes.sum() * spare
  counts = np.floor(share).astype(int)
  counts[np.argsort(-(share - counts), kind='stable')[:spare - counts.sum()]] += 1
  return counts + min_per_class

