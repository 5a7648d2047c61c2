"""The synthetic Red Book collection: grant and filing dates, numbers, families, foreign priorities,
classifications and citations of every patent, drawn by an invented model stated here.

Real numbers need real data: this model exists so that the Red Book reader, the prior-art benchmark
and the examiner's search run offline end to end; a score on it checks the harness, not a method.

Timeline. Patent k (0-based) is ``D0700000 + k``, numbered in grant order as the USPTO numbers;
grants fall on the Tuesdays of ``weeks`` consecutive weekly issues ending 2022-12-27, an equal share
each week. Filing date = grant date - a pendency of 240-1100 days (uniform). Application numbers
are 29/500,000 + k (design series 29).

Families. With probability ``P_CHILD`` (30%) a patent is a continuation (60%), division (30%) or
continuation-in-part (10%) of an earlier-granted patent of the same article, when one exists whose
application was pending when the child was filed (child filed 30+ days after the parent, before the
parent's grant, and 180+ days before its own grant). The child's drawings show the parent's object
(other views, other broken lines); its XML lists the relation chain up to the first patent, as the
real files do. With probability ``P_OUTSIDE_PARENT`` (10%) a patent without such a parent is a division
or continuation of an abandoned application outside the collection (29/000,000 + k).

Priority. With probability ``P_PRIORITY`` (20%) a patent (not a child) claims a foreign priority filed
20-182 days before the first US filing of its chain (its own, or its abandoned parent's; EM
regional; CN, JP or KR national); a child claims its parent's.
The effective filing date is the priority date, else the filing date.

Citations. A patent gets 1 + Poisson(9) examiner citations and, in 70% of patents, 1 + Poisson(7)
applicant citations. Each slot draws its source with the shares ``EXAMINER_SHARES`` (55% article,
15% class, 5% noise, 3% late, 22% outside) or ``APPLICANT_SHARES`` (40%, 10%, 5%, 2%, 43%):

- ``article``: an earlier design of the same article (same USPC class and noun, e.g. D28 razor),
- ``class``: an earlier design of the same class, other article,
- ``noise``: an earlier design of another class,
- ``late``: a design of the same class granted earlier but effectively filed on or after the citing
  patent's effective filing date (the small share of citations a cut-off at that date leaves out),
- ``outside``: a document not in the collection: an older US design (D300000-D699999), a US utility
  patent, a US pre-grant publication, a foreign design, or literature (nplcit), in the shares
  ``OUTSIDE_SHARES`` (50%, 15%, 15%, 12%, 8%), dated before the citing patent's effective filing.

"Earlier" means granted in an earlier week and effectively filed before the citing patent's
effective filing date; the citing patent's own family is never drawn. Each source draws distinct
patents uniformly from its pool; slots a pool cannot fill become outside citations (the patents of
a collection's first weeks cite mostly outside it, as the first years of IMPACT do). A child cites
its parent (examiner) with probability ``P_CITE_PARENT`` (50%). US designs are written ``D845543`` (90%),
``D0845543`` (7%) or ``D 0845543`` (3%).

Memory: a dozen integers per patent (about 130 bytes: 65 MB at 0.5M patents, in each worker
process); each patent's record, citations included, is built when asked for (2.5 ms of CPU at 0.5M).
"""

from __future__ import annotations

import datetime
import functools

import numpy as np

from designclip_jax.data.classes import CLASS_CODES, NUM_CLASSES
from designclip_jax.data.synthetic_articles import LOCARNO, NOUNS, class_counts
from designclip_jax.data.synthetic_records import Patent, Person, Reference, Relation

FIRST_NUMBER = 700_000
FIRST_APPLICATION = 29_500_000
OUTSIDE_APPLICATION = 29_000_000
MAX_PATENTS = 500_000  # < 10**6: priority serials stay unique
LAST_GRANT = datetime.date(2022, 12, 27)  # a Tuesday
MAX_WEEKS = 417  # back to 2015-01-06, inside the v4.5 DTD's years
PENDENCY_DAYS = (240, 1100)
P_CHILD = 0.3
RELATIONS = ('continuation', 'division', 'continuation-in-part')
RELATION_SHARES = (0.6, 0.3, 0.1)
P_OUTSIDE_PARENT = 0.1
P_PRIORITY = 0.2
PRIORITY_DAYS = (20, 182)
MEAN_EXAMINER = 10
MEAN_APPLICANT = 8
P_NO_APPLICANT = 0.3
SOURCES = ('article', 'class', 'noise', 'late', 'outside')
EXAMINER_SHARES = (0.55, 0.15, 0.05, 0.03, 0.22)
APPLICANT_SHARES = (0.40, 0.10, 0.05, 0.02, 0.43)
P_CITE_PARENT = 0.5
OUTSIDE_KINDS = ('us_design', 'us_utility', 'us_publication', 'foreign', 'literature')
OUTSIDE_SHARES = (0.5, 0.15, 0.15, 0.12, 0.08)
EXAMINER, APPLICANT = 'cited by examiner', 'cited by applicant'
LOCARNO_EDITIONS = ((datetime.date(2017, 1, 1), '10'), (datetime.date(2019, 1, 1), '11'),
                    (datetime.date(2021, 1, 1), '12'), (datetime.date.max, '13'))
# number -> grant date anchors for documents outside the collection
_DESIGN_DATES = ((300_000, datetime.date(1989, 3, 7)), (400_000, datetime.date(1998, 10, 27)),
                 (500_000, datetime.date(2004, 12, 28)), (600_000, datetime.date(2009, 9, 15)),
                 (FIRST_NUMBER, datetime.date(2014, 2, 25)))
_UTILITY_DATES = ((4_000_000, datetime.date(1976, 12, 28)), (5_000_000, datetime.date(1991, 3, 19)),
                  (6_000_000, datetime.date(1999, 12, 7)), (7_000_000, datetime.date(2006, 2, 14)),
                  (8_000_000, datetime.date(2011, 8, 16)), (9_000_000, datetime.date(2015, 4, 7)),
                  (10_000_000, datetime.date(2018, 6, 19)), (11_000_000, datetime.date(2021, 5, 11)))
_EXACT_POOL = 4096  # below this many earlier patents the noise pool is listed, above it sampled
_SURNAMES = ('Smith', 'Garcia', 'Chen', 'Muller', 'Tanaka', 'Kim', 'Rossi', 'Dubois', 'Nowak', 'Silva',
             'Johansson', 'Wang', 'Patel', 'Brown', 'Novak', 'Lee', 'Schmidt', 'Moreau', 'Sato', 'Park',
             'Lopez', 'Weber', 'Olsen', 'Liu')
_FIRST_NAMES = ('Anna', 'James', 'Wei', 'Maria', 'Kenji', 'Ji-woo', 'Luca', 'Claire', 'Piotr', 'Ana',
                'Erik', 'Li', 'Priya', 'David', 'Jana', 'Min', 'Thomas', 'Julie')
_CITIES = {'US': (('Portland', 'OR'), ('Austin', 'TX'), ('Columbus', 'OH'), ('San Jose', 'CA')),
           'CN': (('Shenzhen', ''), ('Ningbo', '')), 'DE': (('Stuttgart', ''),), 'JP': (('Osaka', ''),),
           'KR': (('Suwon-si', ''),), 'TW': (('Taichung', ''),), 'FR': (('Lyon', ''),), 'IT': (('Milan', ''),),
           'SE': (('Malmo', ''),)}
_COUNTRIES = tuple(_CITIES)
_COUNTRY_SHARES = (0.55, 0.15, 0.05, 0.05, 0.05, 0.05, 0.04, 0.03, 0.03)
_ORGS = ('Northwind Products, Inc.', 'Kestrel Industries LLC', 'Bluefin Design Co., Ltd.',
         'Harbor & Vale GmbH', 'Orchard Home Goods Corp.', 'Sunward Electronics Co., Ltd.', 'Tallis S.p.A.',
         'Meridian Outdoor AB', 'Copperleaf Brands LLC', 'Hoshi Seisakusho K.K.')
_EXAMINERS = (('Rivard', 'Jennifer'), ('Posthauer', 'Catherine S'), ('Ofstun', 'Alison M'), ('Tran', 'Linh'),
              ('Bennett', 'Marcus'), ('Okafor', 'Ngozi'), ('Lindqvist', 'Eva'), ('Haddad', 'Omar'))
_SHOPS = ('amazon.com', 'walmart.com', 'etsy.com', 'alibaba.com')


def _pick(rng: np.random.Generator, shares) -> int:
  """An index drawn with probabilities ``shares`` (a fast ``rng.choice(len(shares), p=shares)``)."""
  u = rng.random()
  for i, share in enumerate(shares):
    u -= share
    if u < 0:
      return i
  return len(shares) - 1


def _design_text(number: int, rng) -> str:
  """A US design number as the XML writes it: 'D845543' (90%), 'D0845543' (7%) or 'D 0845543' (3%)."""
  return (f'D{number}', f'D{number:07d}', f'D {number:07d}')[_pick(rng, (0.9, 0.07, 0.03))]


def _ymd(ordinal: int) -> str:
  return datetime.date.fromordinal(int(ordinal)).strftime('%Y%m%d')


def _date_of(anchors, number: int) -> int:
  """The grant date (ordinal) of a document number outside the collection, interpolated."""
  return int(np.interp(number, [a for a, _ in anchors], [d.toordinal() for _, d in anchors]))


def _newest_number(anchors, ordinal: int) -> int:
  """The highest number granted before a date (ordinal), interpolated."""
  return int(np.interp(ordinal, [d.toordinal() for _, d in anchors], [a for a, _ in anchors]))


def default_weeks(n_patents: int) -> int:
  """About a dozen patents a week, at most ``MAX_WEEKS``."""
  return int(np.clip(-(-n_patents // 12), 1, MAX_WEEKS))


class Collection:
  """The collection's per-patent integers (class, article, dates, family, priority) and
  ``patent(k)``, the full record of patent k."""

  def __init__(self, n_patents: int, seed: int = 0, weeks: int | None = None):
    weeks = weeks or default_weeks(n_patents)
    if not 1 <= n_patents <= MAX_PATENTS:
      raise ValueError(f'--patents must be between 1 and {MAX_PATENTS} for the Red Book layout, got {n_patents}')
    if not 1 <= weeks <= min(MAX_WEEKS, n_patents):
      raise ValueError(f'--weeks must be between 1 and {min(MAX_WEEKS, n_patents)} (one patent a week at '
                       f'least; {MAX_WEEKS} weekly issues end 2022-12-27), got {weeks}')
    self.n, self.seed, self.weeks = n_patents, seed, weeks
    rng = np.random.default_rng([seed, 101])
    per_class = class_counts(n_patents, 3 if n_patents >= 3 * NUM_CLASSES else 0)
    self.label = rng.permutation(np.repeat(np.arange(NUM_CLASSES), per_class))
    self.article = rng.integers(0, 2, n_patents)  # which of the class's two nouns
    self.week = np.arange(n_patents) * weeks // n_patents
    self.week_start = np.searchsorted(self.week, self.week)  # patents before k's week were granted before it
    self.grant = LAST_GRANT.toordinal() - 7 * (weeks - 1 - self.week)
    self.filing = self.grant - rng.integers(PENDENCY_DAYS[0], PENDENCY_DAYS[1] + 1, n_patents)
    key = self.label * 2 + self.article
    self._by_article = [np.flatnonzero(key == a) for a in range(2 * NUM_CLASSES)]
    self._by_class = [np.flatnonzero(self.label == c) for c in range(NUM_CLASSES)]
    self._link_families(rng)
    self._claim_priorities(rng)
    # a patent is cited by ~10 later ones: keep the recent ones' fields (bounded, so memory stays flat)
    self.uspc = functools.lru_cache(maxsize=1 << 15)(self.uspc)
    self.inventors = functools.lru_cache(maxsize=1 << 15)(self.inventors)

  def _link_families(self, rng):
    n = self.n
    self.parent = np.full(n, -1)
    self.relation = rng.choice(len(RELATIONS), n, p=RELATION_SHARES)
    self.outside_parent = rng.random(n) < P_OUTSIDE_PARENT
    wants_parent = rng.random(n) < P_CHILD
    for k in np.flatnonzero(wants_parent):
      same = self._by_article[self.label[k] * 2 + self.article[k]]
      earlier = same[:np.searchsorted(same, self.week_start[k])]
      for p in rng.choice(earlier, min(8, len(earlier)), replace=False) if len(earlier) else ():
        lo, hi = self.filing[p] + 30, min(self.grant[p] - 1, self.grant[k] - 180)
        if lo <= hi:
          self.parent[k] = p
          self.filing[k] = rng.integers(lo, hi + 1)
          break
    self.outside_parent &= self.parent < 0
    self.outside_filing = self.filing - 30 - rng.integers(0, 700, n)  # of the abandoned parent, where one is
    self.root = np.arange(n)
    for k in np.flatnonzero(self.parent >= 0):  # parents come first, so their roots are final
      self.root[k] = self.root[self.parent[k]]

  def _claim_priorities(self, rng):
    claims = rng.random(self.n) < P_PRIORITY
    first_filing = np.where(self.outside_parent, self.outside_filing, self.filing)  # of the US chain
    self.priority_date = first_filing - rng.integers(PRIORITY_DAYS[0], PRIORITY_DAYS[1] + 1, self.n)
    self.priority_owner = np.where(claims, np.arange(self.n), -1)
    for k in np.flatnonzero(self.parent >= 0):
      owner = self.priority_owner[k] = self.priority_owner[self.parent[k]]
      self.priority_date[k] = self.priority_date[owner] if owner >= 0 else 0
    self.effective = np.where(self.priority_owner >= 0, self.priority_date, self.filing)

  # -- per-patent fields, each a function of (seed, index) so a citing patent can name the cited one --

  def number(self, k: int) -> str:
    return f'D{FIRST_NUMBER + k:07d}'

  def application(self, k: int) -> str:
    return str(FIRST_APPLICATION + k)

  def noun(self, k: int) -> str:
    return NOUNS[CLASS_CODES[self.label[k]]][self.article[k]]

  def uspc(self, k: int) -> tuple[str, ...]:
    """Main and further USPC classes, padded as the XML pads them: a 3-character class and subclass,
    then any digits after the subclass's decimal point ('D28 47' D28/47, 'D 2731' D2/731; further
    ones also ' D9727' D9/727, ' D74012' D7/401.2)."""
    rng = np.random.default_rng([self.seed, 106, k])
    code = CLASS_CODES[self.label[k]]
    base = int(np.random.default_rng([7919, int(self.label[k]), 1 + int(self.article[k])]).integers(20, 980))
    main = base if rng.random() < 0.8 else base + int(rng.integers(1, 6))
    classes = [f'D{code[1:]:>2}{main:>3}']
    for _ in range(_pick(rng, (0.75, 0.17, 0.08))):
      sub = int(rng.integers(1, 999))
      decimal = str(int(rng.integers(1, 10))) if rng.random() < 0.1 else ''
      classes.append(f'{code:>3}{sub:>3}{decimal}')
    return tuple(classes)

  def inventors(self, k: int) -> tuple[Person, ...]:
    rng = np.random.default_rng([self.seed, 103, k])
    people = []
    for _ in range(_pick(rng, (0.45, 0.35, 0.2)) + 1):
      country = _COUNTRIES[_pick(rng, _COUNTRY_SHARES)] if not people else people[0].country
      city, state = _CITIES[country][int(rng.integers(len(_CITIES[country])))]
      people.append(Person(_SURNAMES[int(rng.integers(len(_SURNAMES)))],
                           _FIRST_NAMES[int(rng.integers(len(_FIRST_NAMES)))], city, state, country))
    return tuple(people)

  def cited_name(self, k: int) -> str:
    people = self.inventors(k)
    return people[0].last + (' et al.' if len(people) > 1 else '')

  def priority(self, k: int) -> tuple[tuple[str, str, str, str], ...]:
    owner = int(self.priority_owner[k])
    if owner < 0:
      return ()
    rng = np.random.default_rng([self.seed, 107, owner])
    year = _ymd(self.priority_date[owner])[:4]
    country = ('EM', 'CN', 'JP', 'KR')[_pick(rng, (0.55, 0.25, 0.1, 0.1))]
    # a bijection of the owner's index: two families never claim the same foreign application (a
    # reader that joins families by claimed priority would merge them)
    serial = owner * 2_654_435_761 % 10**6
    number = {'EM': f'008{serial:06d}' + ('-0001' if rng.random() < 0.3 else ''),
              'CN': f'{year}3{serial:07d}.{serial % 10}', 'JP': f'{year}-{serial:06d}',
              'KR': f'30-{year}-{serial:07d}'}[country]
    return (('regional' if country == 'EM' else 'national', country, number, _ymd(self.priority_date[owner])),)

  def relations(self, k: int) -> tuple[Relation, ...]:
    """The chain of related applications, the direct parent first (whose grant date the USPTO leaves out)."""
    chain, child = [], k
    while self.parent[child] >= 0:
      p = int(self.parent[child])
      chain.append(Relation(RELATIONS[self.relation[child]], self.application(p), _ymd(self.filing[p]),
                            f'D{FIRST_NUMBER + p}', '' if child == k else _ymd(self.grant[p]), '',
                            self.application(child)))
      child = p
    if self.outside_parent[child]:
      chain.append(Relation(RELATIONS[min(1, self.relation[child])], str(OUTSIDE_APPLICATION + child),
                            _ymd(self.outside_filing[child]),
                            '', '', 'ABANDONED', self.application(child)))
    return tuple(chain)

  # -- citations --

  def pool(self, source: str, k: int) -> np.ndarray:
    """Indices a citation of ``source`` ('article', 'class', 'noise', 'late') by patent k may draw."""
    if source == 'noise':
      group = np.arange(self.week_start[k])
    else:
      group = (self._by_article[self.label[k] * 2 + self.article[k]] if source == 'article'
               else self._by_class[self.label[k]])
      group = group[:np.searchsorted(group, self.week_start[k])]
    ok = self.root[group] != self.root[k]
    ok &= (self.effective[group] >= self.effective[k]) if source == 'late' else (self.effective[group] < self.effective[k])
    if source == 'class':
      ok &= self.article[group] != self.article[k]
    if source == 'noise':
      ok &= self.label[group] != self.label[k]
    return group[ok]

  def _draw(self, source: str, k: int, need: int, rng) -> list[int]:
    if source != 'noise' or self.week_start[k] <= _EXACT_POOL:
      pool = self.pool(source, k)
      return [int(j) for j in rng.choice(pool, min(need, len(pool)), replace=False)] if len(pool) else []
    chosen: list[int] = []  # uniform without replacement: draw until ``need`` distinct valid ones
    for _ in range(32):
      for j in rng.integers(0, self.week_start[k], 4 * need).tolist():
        if (j not in chosen and self.label[j] != self.label[k] and self.root[j] != self.root[k]
            and self.effective[j] < self.effective[k]):
          chosen.append(j)
          if len(chosen) == need:
            return chosen
    return chosen

  def _cite(self, j: int, category: str, source: str, rng) -> Reference:
    return Reference(category, source, 'US', _design_text(FIRST_NUMBER + j, rng), 'S', self.cited_name(j),
                     _ymd(self.grant[j])[:6] + '00',
                     self.uspc(j)[0] if category == EXAMINER else '', cited_index=j)

  def _outside(self, k: int, category: str, rng) -> Reference:
    kind = OUTSIDE_KINDS[_pick(rng, OUTSIDE_SHARES)]
    before = int(self.effective[k])
    name = _SURNAMES[int(rng.integers(len(_SURNAMES)))] + (' et al.' if rng.random() < 0.4 else '')
    code = CLASS_CODES[self.label[k]]
    if kind == 'us_design':
      number = int(rng.integers(300_000, max(300_001, min(FIRST_NUMBER, _newest_number(_DESIGN_DATES, before)))))
      day = _ymd(_date_of(_DESIGN_DATES, number))
      uspc = f'D{code[1:]:>2}{int(rng.integers(1, 999)):>3}' if category == EXAMINER else ''
      return Reference(category, 'outside', 'US', _design_text(number, rng), 'S', name, day[:6] + '00', uspc)
    if kind == 'us_utility':
      number = int(rng.integers(4_000_000, _newest_number(_UTILITY_DATES, before)))
      day = _ymd(_date_of(_UTILITY_DATES, number))
      patent_kind = 'A' if number < 6_167_000 else ('B2' if rng.random() < 0.8 else 'B1')
      return Reference(category, 'outside', 'US', str(number), patent_kind, name, day[:6] + '00')
    when = datetime.date.fromordinal(int(rng.integers(datetime.date(2001, 3, 15).toordinal(), before)))
    day = when.strftime('%Y%m%d')
    if kind == 'us_publication':
      return Reference(category, 'outside', 'US', f'{day[:4]}/0{int(rng.integers(0, 400_000)):06d}', 'A1', name,
                       day[:6] + '00')
    if kind == 'foreign':
      country = ('CN', 'JP', 'KR', 'EM', 'WO', 'DE')[int(rng.integers(6))]
      number = {'CN': f'30{int(rng.integers(10**6, 10**7))}', 'EM': f'00{int(rng.integers(10**6, 9 * 10**6))}-0001',
                'JP': ('D ' if rng.random() < 0.4 else 'D') + str(int(rng.integers(1_200_000, 1_700_000))),
                'KR': f'30-0{int(rng.integers(600_000, 999_999))}', 'WO': f'DM/0{int(rng.integers(50_000, 99_999))}',
                'DE': str(int(rng.integers(1_000_000, 9_999_999)))}[country]
      return Reference(category, 'outside', country, number, date=day[:6] + '00')
    shop = _SHOPS[int(rng.integers(len(_SHOPS)))]
    text = (f'{_ORGS[int(rng.integers(len(_ORGS)))].split(",")[0]} {self.noun(k)}, {shop}, first available '
            f'{when:%b}. {when.day}, {when.year}. https://www.{shop}/dp/B0{int(rng.integers(10**7, 10**8))} '
            f'(Year: {when.year}).')
    return Reference(category, 'outside', text=text)

  def references(self, k: int) -> tuple[Reference, ...]:
    """Patent k's citations, in the real files' order: US patents by date, US publications,
    foreign documents, literature."""
    rng = np.random.default_rng([self.seed, 102, k])
    n_examiner = 1 + int(rng.poisson(MEAN_EXAMINER - 1))
    n_applicant = 0 if rng.random() < P_NO_APPLICANT else 1 + int(rng.poisson(MEAN_APPLICANT - 1))
    wanted = {EXAMINER: rng.multinomial(n_examiner, EXAMINER_SHARES),
              APPLICANT: rng.multinomial(n_applicant, APPLICANT_SHARES)}
    outside = {EXAMINER: int(wanted[EXAMINER][-1]), APPLICANT: int(wanted[APPLICANT][-1])}
    refs = []
    for s, source in enumerate(SOURCES[:-1]):
      counts = {c: int(w[s]) for c, w in wanted.items()}
      chosen = self._draw(source, k, counts[EXAMINER] + counts[APPLICANT], rng) if sum(counts.values()) else []
      got = {EXAMINER: min(counts[EXAMINER], len(chosen))}
      got[APPLICANT] = len(chosen) - got[EXAMINER]
      for i, j in enumerate(chosen):
        refs.append(self._cite(j, EXAMINER if i < got[EXAMINER] else APPLICANT, source, rng))
      for c in outside:
        outside[c] += counts[c] - got[c]
    if self.parent[k] >= 0 and rng.random() < P_CITE_PARENT:
      refs.append(self._cite(int(self.parent[k]), EXAMINER, 'family', rng))
    for category, count in outside.items():
      refs.extend(self._outside(k, category, rng) for _ in range(count))
    unique = {}
    for ref in refs:  # the pools are disjoint, but an outside number can repeat: its first citation stands
      unique.setdefault(ref.cited_index if ref.cited_index >= 0 else (ref.country, ref.doc_number, ref.text), ref)

    def order(ref):
      group = 3 if ref.text else 2 if ref.country != 'US' else 1 if '/' in ref.doc_number else 0
      return group, ref.date, ref.doc_number, ref.text
    return tuple(sorted(unique.values(), key=order))

  def patent(self, k: int) -> Patent:
    rng = np.random.default_rng([self.seed, 109, k])
    grant = datetime.date.fromordinal(int(self.grant[k]))
    edition = next(e for until, e in LOCARNO_EDITIONS if grant < until)
    inventors = self.inventors(k)
    examiners = [Person(*_EXAMINERS[int(rng.integers(len(_EXAMINERS)))])]
    if rng.random() < 0.4:
      examiners.append(Person(*_EXAMINERS[int(rng.integers(len(_EXAMINERS)))]))
    applicant = _ORGS[int(rng.integers(len(_ORGS)))] if rng.random() < 0.7 else ''
    return Patent(k, self.number(k), _ymd(self.grant[k]), self.application(k), _ymd(self.filing[k]),
                  CLASS_CODES[self.label[k]], self.noun(k), LOCARNO[self.noun(k)], edition, self.uspc(k),
                  self.priority(k), self.relations(k), self.references(k), inventors, applicant,
                  tuple(examiners), f'29{11 + int(self.label[k]) % 19}', int(self.root[k]))
