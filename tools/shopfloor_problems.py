"""The shop-floor problem types that `tools/shopfloor_seeds.py` draws questions from (design: its docstring).

`PROBLEMS` maps a name to a `Problem`: topic, a `draw` function that picks the numbers (as the text the question
shows), the answer expression, a rationale template, and the `train` and `heldout` question wordings. `NAMES`
holds the machine, part and line names each kind of wording is filled with.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from edgedistill.calculator import evaluate, format_number

# Held-out questions name other machines, parts and lines. Machines form their plural with a bare "s".
NAMES = {
    "train": {"machine": ["CNC lathe", "press brake", "injection moulder", "laser cutter", "milling centre",
                          "bending machine"],
              "part": ["brackets", "bushings", "housings", "gears", "hinges", "flanges"],
              "line": ["Line A", "Line B", "Line C", "Line D"]},
    "heldout": {"machine": ["robot welder", "die-casting machine", "plastic extruder", "surface grinder",
                            "gear hobber", "spot welder"],
                "part": ["valve bodies", "pump shafts", "sprockets", "gaskets", "pulleys", "clamps"],
                "line": ["Cell K", "Cell M", "Cell P", "Cell R"]},
}
MATERIALS = [("steel", "7.85"), ("aluminium", "2.7"), ("brass", "8.5"), ("copper", "8.96")]


def calc(expr: str) -> str:
    """The calculator's text for the value of `expr`."""
    return format_number(evaluate(expr))


def pick(r: random.Random, lo: float, hi: float, step: float = 1) -> str:
    """A random multiple of `step` from lo to hi, written as the question shows it (no trailing zeros)."""
    return format_number(lo + step * r.randint(0, round((hi - lo) / step)))


def one_of(r: random.Random, *values) -> str:
    return str(r.choice(values))


@dataclass
class Problem:
    topic: str
    draw: Callable[[random.Random], dict | None]   # None: reject, draw again
    expr: str                                       # answer expression template
    rationale: str                                  # `<<expr>>` marks each calculation
    train: list[str]
    heldout: list[str]
    derived: dict[str, str] = field(default_factory=dict)  # intermediate values the rationale quotes
    whole: bool = False                             # the answer must be a whole number


# ---- draw functions that need more than a dict of independent picks ----

def _count_over_hours(r):
    rate, hours = pick(r, 30, 240, 10), pick(r, 4, 12, 0.5)
    return {"count": calc(f"{rate}*{hours}"), "hours": hours}


def _oee_counts(r):
    planned, ideal = one_of(r, 420, 450, 480, 960), one_of(r, 0.25, 0.5, 0.75, 1.5, 2, 2.5)
    top = float(planned) / float(ideal)
    return {"planned": planned, "ideal": ideal, "good": str(r.randint(int(0.55 * top) + 1, int(0.95 * top)))}


def _cycle_from_output(r):
    minutes, cycle = one_of(r, 60, 90, 120, 240, 360, 480), pick(r, 12, 90)
    parts = calc(f"{minutes}*60/{cycle}")
    return {"minutes": minutes, "parts": parts} if "." not in parts else None


def _scrap(r):
    total = pick(r, 200, 6000, 10)
    return {"total": total, "scrap": str(r.randint(2, int(total) // 12))}


def _good(r):
    total = pick(r, 200, 6000, 10)
    return {"total": total, "good": str(r.randint(int(total) * 85 // 100, int(total) - 1))}


def _readings(r):
    nominal = one_of(r, 10, 12.5, 20, 25, 30, 40, 50)
    values = [format_number(float(nominal) + 0.01 * r.randint(-6, 6)) for _ in range(5)]
    fields = {f"r{i + 1}": v for i, v in enumerate(values)}
    fields["hi"], fields["lo"] = max(values, key=float), min(values, key=float)
    return fields if fields["hi"] != fields["lo"] else None


def _control_limit(r):
    upper = r.random() < 0.5
    return {"mean": pick(r, 10, 60, 0.05), "sigma": pick(r, 0.01, 0.08, 0.01), "op": "+" if upper else "-",
            "which": "upper" if upper else "lower", "opword": "plus" if upper else "minus",
            "short": "UCL" if upper else "LCL"}


def _days_of_stock(r):
    daily = pick(r, 40, 600, 10)
    return {"daily": daily, "stock": calc(f"{daily}*{pick(r, 2, 30, 0.5)}")}


def _inches(r):
    inch = pick(r, 0.25, 8, 0.25)
    return {"inch": inch} if inch != "1" else None   # "1 inches"


def _boxes(r):
    parts, per_box = pick(r, 100, 5000), one_of(r, 6, 8, 10, 12, 20, 24, 25, 30, 36, 40, 48, 50)
    return {"parts": parts, "per_box": per_box} if int(parts) % int(per_box) else None


def _mttr(r):
    n = pick(r, 3, 15)
    return {"n": n, "total": calc(f"{n}*{pick(r, 15, 180)}")}


def _utilisation(r):
    avail = one_of(r, 40, 50, 80, 100, 120, 160, 200)
    return {"avail": avail, "run": pick(r, 10, int(avail) - 2, 0.5)}


def _changeover_saving(r):
    old = pick(r, 30, 180, 5)
    return {"old": old, "new": pick(r, 10, int(old) - 5, 5), "n": pick(r, 2, 20)}


def _weight(r):
    mat, density = r.choice(MATERIALS)
    length, width, height = sorted((pick(r, 5, 40), pick(r, 3, 25), pick(r, 1, 10)), key=int, reverse=True)
    return {"mat": mat, "d": density, "l": length, "w": width, "h": height}


PROBLEMS: dict[str, Problem] = {
    # ---------------- throughput ----------------
    "output_from_rate": Problem(
        "throughput", lambda r: {"rate": pick(r, 40, 240, 5), "hours": pick(r, 6, 12, 0.5)},
        "{rate}*{hours}", "At {rate} parts an hour for {hours} hours, the output is <<{rate}*{hours}>> parts.",
        train=["The {machine} makes {rate} {part} per hour. How many {part} does it make in {hours} hours?",
               "{line} produces {rate} {part} every hour. If it runs for {hours} hours, how many {part} are produced?",
               "The {machine} runs at a rate of {rate} {part} per hour for {hours} hours. What is the total output?",
               "How many {part} will the {machine} produce in {hours} hours at {rate} {part} per hour?"],
        heldout=["Operator here: my {machine} turns out {rate} {part} each hour and I'm scheduled for {hours} hours "
                 "today. What count should I expect at the end?",
                 "Planning note - {hours} hours of run time are booked on the {machine}, which averages {rate} "
                 "{part} hourly. Expected quantity?"]),
    "hourly_rate": Problem(
        "throughput", _count_over_hours, "{count}/{hours}",
        "{count} parts in {hours} hours is <<{count}/{hours}>> parts per hour.",
        train=["The {machine} made {count} {part} in {hours} hours. What was its average output per hour?",
               "{line} finished {count} {part} over {hours} hours. How many {part} per hour is that?",
               "In {hours} hours the {machine} produced {count} {part}. Find the hourly throughput.",
               "A shift on the {machine} lasted {hours} hours and yielded {count} {part}. What was the throughput "
               "in {part} per hour?"],
        heldout=["By the end of my {hours} hours at the {machine} the counter read {count}. On average, how many "
                 "did I finish each hour?",
                 "Production log: {count} {part} off the {machine}; clock time {hours} h. Work out the mean hourly "
                 "rate."]),
    "multi_machine_output": Problem(
        "throughput", lambda r: {"machines": pick(r, 2, 6), "rate": pick(r, 20, 90, 5),
                                 "hours": one_of(r, 7.5, 8, 10, 12, 16, 24)},
        "{machines}*{rate}*{hours}",
        "Together the machines make <<{machines}*{rate}>> parts an hour, so in {hours} hours they make "
        "<<{per_hour}*{hours}>> parts.",
        derived={"per_hour": "{machines}*{rate}"},
        train=["There are {machines} identical {machine}s, each making {rate} {part} per hour. How many {part} do "
               "they make together in {hours} hours?",
               "{machines} {machine}s run side by side at {rate} {part} an hour each. What is their combined output "
               "over {hours} hours?",
               "Each of {machines} {machine}s produces {rate} {part} per hour. Find the total number of {part} after "
               "{hours} hours.",
               "How many {part} do {machines} {machine}s make in {hours} hours if each one makes {rate} per hour?"],
        heldout=["We have {hours} hours left this week and {machines} {machine}s free. Each can do {rate} {part} an "
                 "hour. What total can they turn out?",
                 "Capacity check: {rate} {part}/h per {machine}, {machines} of them available, {hours} h of run "
                 "time. Total capacity in pieces?"]),
    # ---------------- OEE ----------------
    "oee_from_factors": Problem(
        "oee", lambda r: {"a": pick(r, 75, 98), "p": pick(r, 78, 99), "q": pick(r, 92, 99)},
        "round({a}*{p}*{q}/10000*10)/10",
        "OEE is availability times performance times quality: {a}% x {p}% x {q}% is "
        "<<round({a}*{p}*{q}/10000*10)/10>> percent to one decimal place.",
        train=["The {machine} ran with {a}% availability, {p}% performance and {q}% quality. What is its OEE as a "
               "percentage, to one decimal place?",
               "Availability on {line} was {a}%, performance {p}% and quality {q}%. Calculate the OEE in percent, "
               "rounded to one decimal place.",
               "Find the OEE of the {machine} to one decimal place if availability is {a}%, performance is {p}% "
               "and the quality rate is {q}%.",
               "For last week the {machine} scored availability {a}%, performance {p}% and quality {q}%. What OEE "
               "percentage does that give, to 1 decimal place?"],
        heldout=["Only {q}% of what the {machine} made was good first time, it ran at {p}% of ideal speed, and it "
                 "was up {a}% of the planned time. Express the overall equipment effectiveness as a percent (one "
                 "decimal).",
                 "Quick one for the morning meeting: quality {q}, performance {p}, availability {a} (all "
                 "percentages) on the {machine}. Multiply out the OEE and report it with one decimal."]),
    "oee_from_counts": Problem(
        "oee", _oee_counts, "{good}*{ideal}/{planned}*100",
        "The good parts are worth <<{good}*{ideal}>> minutes of ideal run time out of {planned} planned minutes, "
        "so OEE is <<{worth}/{planned}*100>> percent.",
        derived={"worth": "{good}*{ideal}"},
        train=["The {machine} had {planned} minutes of planned production time and made {good} good {part}. The "
               "ideal cycle time is {ideal} minutes per part. What is the OEE in percent?",
               "{line} was planned to run for {planned} minutes. It produced {good} good {part} at an ideal cycle "
               "time of {ideal} min each. Calculate OEE as a percentage.",
               "With an ideal cycle time of {ideal} minutes, the {machine} made {good} good {part} in {planned} "
               "planned minutes. What OEE percentage is that?",
               "What is the OEE of the {machine} if it made {good} good {part} during {planned} minutes of planned "
               "time and its ideal cycle is {ideal} minutes?"],
        heldout=["I got {good} good {part} off the {machine} today. Each one should take {ideal} min at rated "
                 "speed, and the plan gave me {planned} min. How effective was the equipment overall, in percent?",
                 "OEE shortcut: good output times ideal cycle over planned time. Data for the {machine}: ideal "
                 "cycle {ideal} min, planned time {planned} min, good output {good}. Result in %?"]),
    # ---------------- takt time ----------------
    "takt_seconds": Problem(
        "takt_time", lambda r: {"minutes": one_of(r, 420, 450, 460, 480, 900, 960), "demand": pick(r, 120, 1500, 10)},
        "{minutes}*60/{demand}",
        "{minutes} minutes is <<{minutes}*60>> seconds, and spread over {demand} units the takt time is "
        "<<{seconds}/{demand}>> seconds.",
        derived={"seconds": "{minutes}*60"},
        train=["{line} has {minutes} minutes of available time per shift and customer demand is {demand} units per "
               "shift. What is the takt time in seconds?",
               "Customers need {demand} {part} per day and the plant works {minutes} minutes a day. Calculate the "
               "takt time in seconds.",
               "What is the takt time, in seconds, for a demand of {demand} {part} per shift with {minutes} minutes "
               "of available production time?",
               "The available working time is {minutes} minutes and the daily demand is {demand} {part}. Find the "
               "takt time in seconds per part."],
        heldout=["Sales just confirmed {demand} {part} a day. We've got {minutes} min of net working time daily. How "
                 "many seconds can each unit take, at most, to keep pace with the customer?",
                 "If {demand} orders must leave the building every day and the crew works {minutes} minutes, how "
                 "often (in seconds) must one come off the end of {line}?"]),
    "takt_minutes": Problem(
        "takt_time", lambda r: {"shift": one_of(r, 480, 510, 540, 600), "breaks": one_of(r, 30, 40, 45, 50, 60),
                                "demand": pick(r, 20, 400)},
        "({shift}-{breaks})/{demand}",
        "Available time is <<{shift}-{breaks}>> minutes, so the takt time is <<{avail}/{demand}>> minutes per unit.",
        derived={"avail": "{shift}-{breaks}"},
        train=["A shift is {shift} minutes long with {breaks} minutes of breaks. Demand is {demand} {part} per shift. "
               "What is the takt time in minutes?",
               "{line} runs shifts of {shift} minutes, including {breaks} minutes of breaks, and must make {demand} "
               "{part}. Calculate the takt time in minutes.",
               "With {breaks} minutes of breaks in one {shift}-minute shift and a demand of {demand} {part}, what is "
               "the takt time in minutes per part?",
               "Find the takt time in minutes if the shift lasts {shift} minutes, breaks take {breaks} minutes and "
               "the customer needs {demand} {part} per shift."],
        heldout=["Our customer pulls {demand} {part} per shift. Take the {breaks} min of lunch and tea out of the "
                 "{shift}-min shift. What pace, in minutes per piece, should {line} work to?",
                 "Supervisor's note: demand {demand}, shift length {shift} min, breaks {breaks} min. Set the takt "
                 "(minutes per unit) for {line}."]),
    # ---------------- cycle time ----------------
    "cycle_from_output": Problem(
        "cycle_time", _cycle_from_output, "{minutes}*60/{parts}",
        "{minutes} minutes is <<{minutes}*60>> seconds; shared over {parts} parts that is <<{seconds}/{parts}>> "
        "seconds per part.",
        derived={"seconds": "{minutes}*60"},
        train=["The {machine} made {parts} {part} in {minutes} minutes. What is the average cycle time in seconds?",
               "In {minutes} minutes the {machine} completed {parts} {part}. How many seconds does each part take "
               "on average?",
               "Find the average cycle time in seconds if {parts} {part} were produced in {minutes} minutes on the "
               "{machine}.",
               "{line} turned out {parts} {part} over {minutes} minutes. Calculate the cycle time per part in "
               "seconds."],
        heldout=["I timed the {machine} for {minutes} min and counted {parts} {part} coming out. How many seconds "
                 "per piece does that work out to?",
                 "Stopwatch study: {parts} pieces, {minutes} minutes elapsed, {machine}. Seconds per cycle?"]),
    "output_from_cycle": Problem(
        "cycle_time", lambda r: {"cycle": one_of(r, 12, 15, 18, 20, 24, 25, 30, 36, 40, 45, 48, 50, 60, 72, 75, 90),
                                 "hours": pick(r, 2, 12, 0.5)},
        "{hours}*3600/{cycle}",
        "{hours} hours is <<{hours}*3600>> seconds, so the machine completes <<{seconds}/{cycle}>> parts.",
        derived={"seconds": "{hours}*3600"}, whole=True,
        train=["The {machine} has a cycle time of {cycle} seconds. How many {part} can it make in {hours} hours?",
               "Each cycle on the {machine} takes {cycle} seconds and makes one part. How many {part} are made in "
               "{hours} hours?",
               "At a cycle time of {cycle} seconds per part, how many {part} does {line} produce in {hours} hours?",
               "How many {part} will the {machine} complete in {hours} hours if one cycle takes {cycle} seconds?"],
        heldout=["Over {hours} hours of running, with a part dropping out of the {machine} every {cycle} s, what "
                 "count will be on the tally sheet?",
                 "Estimate for the customer: {machine} runs {hours} h straight; every {cycle} seconds it finishes "
                 "one of the {part}. Quantity produced?"]),
    "station_sum": Problem(
        "cycle_time", lambda r: {"a": pick(r, 5, 60, 0.5), "b": pick(r, 5, 60, 0.5), "c": pick(r, 5, 60, 0.5)},
        "{a}+{b}+{c}", "Adding the three steps gives <<{a}+{b}+{c}>> seconds.",
        train=["A part passes through three stations on {line} taking {a}, {b} and {c} seconds. What is the total "
               "cycle time in seconds?",
               "The {part} are loaded in {a} seconds, machined in {b} seconds and unloaded in {c} seconds. What is "
               "the total cycle time in seconds?",
               "Find the total cycle time if the three steps on the {machine} take {a} s, {b} s and {c} s.",
               "On the {machine}, loading takes {a} seconds, cutting takes {b} seconds and inspection takes {c} "
               "seconds. How long is one full cycle in seconds?"],
        heldout=["From my watch: {c} s to check the part, {a} s to clamp it and {b} s for the {machine} to run. Add "
                 "it up - how many seconds per piece?",
                 "Time study sheet for {line}: op A = {a} s, op B = {b} s, op C = {c} s. What is the combined time "
                 "for all three operations, in seconds?"]),
    # ---------------- scrap rate / yield ----------------
    "scrap_rate": Problem(
        "scrap_yield", _scrap, "{scrap}/{total}*100",
        "{scrap} scrapped out of {total} is <<{scrap}/{total}*100>> percent.",
        train=["Out of {total} {part} made on the {machine}, {scrap} were scrapped. What is the scrap rate in "
               "percent?",
               "{line} produced {total} {part} and {scrap} of them were rejected. Calculate the scrap rate as a "
               "percentage.",
               "What percentage of the {part} was scrapped if {scrap} out of {total} failed inspection?",
               "The {machine} made {total} {part} yesterday, of which {scrap} went to scrap. Find the scrap rate in "
               "percent."],
        heldout=["The red bin beside my {machine} held {scrap} rejects at shift end, and the counter showed {total} "
                 "cycles in total. What share of the output, in percent, was thrown away?",
                 "Quality report: {scrap} scrapped / {total} produced ({part}, {machine}). Give the scrap "
                 "percentage."]),
    "yield_rate": Problem(
        "scrap_yield", _good, "{good}/{total}*100",
        "{good} good out of {total} is a yield of <<{good}/{total}*100>> percent.",
        train=["{line} started {total} {part} and {good} passed final inspection. What is the yield in percent?",
               "Of {total} {part} produced on the {machine}, {good} were good. Calculate the yield as a percentage.",
               "What is the first-pass yield, in percent, if {good} of {total} {part} were right first time?",
               "The {machine} made {total} {part}, of which {good} were good parts. Find the yield in percent."],
        heldout=["I put {total} blanks through the {machine} and {good} came out within tolerance. What percent is "
                 "that?",
                 "Batch closed: {good} accepted, {total} started ({part}). Yield as a percent?"]),
    "good_from_yield": Problem(
        "scrap_yield", lambda r: {"total": pick(r, 200, 9000, 100), "y": pick(r, 85, 99)},
        "{total}*{y}/100", "{y}% of {total} is <<{total}*{y}/100>> good parts.", whole=True,
        train=["The {machine} has a yield of {y}%. How many good {part} can be expected from {total} parts?",
               "{line} runs with a yield of {y}%. If {total} {part} are made, how many are good?",
               "How many good {part} come out of a batch of {total} if the yield is {y}%?",
               "A batch of {total} {part} is run on the {machine}, which has a yield of {y}%. How many good parts "
               "are expected?"],
        heldout=["Historically only {y} in every 100 pieces from the {machine} pass. Planning a run of {total} "
                 "{part}, how many sellable ones should I count on?",
                 "Order of {total} {part} going onto the {machine}; expect {y}% good. Number of good {part}?"]),
    # ---------------- unit conversion ----------------
    "inch_to_mm": Problem(
        "unit_conversion", _inches, "{inch}*25.4",
        "One inch is 25.4 mm, so {inch} inches is <<{inch}*25.4>> mm.",
        train=["A drawing gives a bore depth of {inch} inches. What is that in millimetres?",
               "Convert {inch} in to mm.",
               "The {part} are {inch} inches long. How long are they in millimetres?",
               "How many millimetres is {inch} inches?"],
        heldout=["The American customer's print calls out {inch}\" but our calipers only read metric. What should I "
                 "be reading in mm?",
                 "Metric equivalent, please, of an imperial length of {inch} inches (answer in millimetres)."]),
    "kg_to_lb": Problem(
        "unit_conversion", lambda r: {"kg": pick(r, 2, 900, 0.5)}, "{kg}*2.2",
        "At 2.2 lb per kg, {kg} kg is <<{kg}*2.2>> lb.",
        train=["A crate of {part} weighs {kg} kg. Using 1 kg = 2.2 lb, what is its weight in pounds?",
               "Convert {kg} kg to pounds, taking 1 kg as 2.2 lb.",
               "The die set weighs {kg} kg. How many pounds is that if 1 kg is 2.2 lb?",
               "How many pounds is {kg} kilograms? Use 2.2 lb per kg."],
        heldout=["The hoist label is in pounds and the fixture's nameplate says {kg} kg. With 2.2 lb to a kilo, what "
                 "figure do I compare against the label?",
                 "Shipping wants the weight in lb: one pallet of {part} at {kg} kg, factor 2.2. How many lb is "
                 "that?"]),
    "litre_to_gallon": Problem(
        "unit_conversion", lambda r: {"litres": pick(r, 5, 1000, 5)}, "round({litres}/3.785*10)/10",
        "At 3.785 litres per gallon, {litres} litres is <<round({litres}/3.785*10)/10>> gallons to one decimal "
        "place.",
        train=["A coolant tank holds {litres} litres. How many US gallons is that to one decimal place? "
               "(1 gal = 3.785 L)",
               "Convert {litres} L of hydraulic oil to US gallons, using 3.785 L per gallon. Round to one decimal "
               "place.",
               "The {machine} uses {litres} litres of coolant a week. Taking 1 gallon as 3.785 litres, how many "
               "gallons is that, to one decimal place?",
               "How many gallons are in {litres} litres if one gallon is 3.785 litres? Give the answer to one "
               "decimal place."],
        heldout=["The supplier only sells oil by the US gallon (3.785 L each) and our sump takes {litres} L. How "
                 "many gallons is the sump, to the nearest tenth?",
                 "Drum label reads {litres} L. Our American sister plant asks for the figure in gallons - use 3.785 "
                 "litres to the gallon and give one decimal."]),
    "bar_to_psi": Problem(
        "unit_conversion", lambda r: {"bar": pick(r, 1, 12, 0.5)}, "{bar}*14.5",
        "At 14.5 psi per bar, {bar} bar is <<{bar}*14.5>> psi.",
        train=["The air supply on the {machine} is set to {bar} bar. What is that in psi, using 1 bar = 14.5 psi?",
               "Convert {bar} bar to psi. Take 1 bar as 14.5 psi.",
               "A pneumatic clamp runs at {bar} bar. How many psi is that if 1 bar equals 14.5 psi?",
               "How many psi is a pressure of {bar} bar? Use 14.5 psi per bar."],
        heldout=["My gauge on the {machine} only shows psi, but the work instruction says {bar} bar. At 14.5 psi to "
                 "the bar, what should the needle point to?",
                 "Gauge in psi, spec in bar ({bar}), conversion factor 14.5. Target reading?"]),
    "celsius_to_fahrenheit": Problem(
        "unit_conversion", lambda r: {"c": pick(r, 15, 260, 5)}, "{c}*9/5+32",
        "Fahrenheit is Celsius times 9/5 plus 32: <<{c}*9/5+32>> °F.",
        train=["The oven on {line} is set to {c} °C. What is that in °F?",
               "Convert {c} degrees Celsius to degrees Fahrenheit.",
               "A mould temperature of {c} °C is required. What is this in degrees Fahrenheit?",
               "How many degrees Fahrenheit is {c} °C?"],
        heldout=["The temperature controller we bought from the States reads Fahrenheit only, and the process sheet "
                 "says {c} degrees C. Which Fahrenheit value do I dial in?",
                 "Spec {c}°C; display in °F. Setpoint?"]),
    "minutes_to_hours": Problem(
        "unit_conversion", lambda r: {"m": pick(r, 75, 900, 3)}, "{m}/60",
        "There are 60 minutes in an hour, so {m} minutes is <<{m}/60>> hours.",
        train=["The {machine} ran for {m} minutes. How many hours is that?",
               "Convert {m} minutes to hours.",
               "A maintenance job took {m} minutes. Express this in hours.",
               "How many hours are there in {m} minutes of machine time?"],
        heldout=["The timesheet system only accepts decimal hours, and I spent {m} min on the {machine}. What "
                 "number do I type in?",
                 "Booking {m} min of labour against the job - convert to hours for the cost sheet."]),
    # ---------------- packing ----------------
    "full_boxes": Problem(
        "packing", _boxes, "floor({parts}/{per_box})",
        "Each box takes {per_box}, so {parts} parts fill <<floor({parts}/{per_box})>> full boxes.",
        train=["There are {parts} {part} to pack, {per_box} per box. How many full boxes can be filled?",
               "{line} made {parts} {part}. Each box holds {per_box}. How many boxes can be completely filled?",
               "How many full boxes of {per_box} can be packed from {parts} {part}?",
               "A box takes {per_box} {part}. How many full boxes do {parts} {part} make?"],
        heldout=["I've got {parts} {part} on the bench and the cartons take {per_box} apiece. Ignoring any "
                 "part-filled carton, how many can I seal and send?",
                 "Pack-out: qty {parts}, carton capacity {per_box}. Count of complete cartons only?"]),
    "boxes_needed": Problem(
        "packing", _boxes, "ceil({parts}/{per_box})",
        "{parts} parts at {per_box} per box need <<ceil({parts}/{per_box})>> boxes, counting the last part-filled "
        "one.",
        train=["{parts} {part} must be shipped in boxes of {per_box}. How many boxes are needed?",
               "Each box holds {per_box} {part}. How many boxes are needed to pack {parts} {part}?",
               "How many boxes are needed for an order of {parts} {part} if a box holds {per_box}?",
               "The customer ordered {parts} {part}, packed {per_box} to a box. How many boxes must be prepared?"],
        heldout=["Stores asks how many empty cartons to send down for a run of {parts} {part}; every carton fits "
                 "{per_box}, and a part-filled one still counts. How many?",
                 "Job of {parts} pcs, {per_box} pcs/crate, no loose parts allowed. Crates required?"]),
    "parts_per_pallet": Problem(
        "packing", lambda r: {"per_box": one_of(r, 6, 8, 10, 12, 20, 24, 25, 30, 36, 40, 48, 50),
                              "per_layer": pick(r, 4, 12), "layers": pick(r, 3, 6)},
        "{per_box}*{per_layer}*{layers}",
        "A pallet holds <<{per_layer}*{layers}>> boxes, and at {per_box} parts per box that is "
        "<<{boxes}*{per_box}>> parts.",
        derived={"boxes": "{per_layer}*{layers}"},
        train=["A pallet holds {layers} layers of {per_layer} boxes, and each box holds {per_box} {part}. How many "
               "{part} are on a full pallet?",
               "Boxes of {per_box} {part} are stacked {per_layer} per layer, {layers} layers high. How many {part} "
               "fit on one pallet?",
               "How many {part} are on a pallet with {layers} layers, {per_layer} boxes per layer and {per_box} "
               "{part} per box?",
               "Each box contains {per_box} {part}. A pallet takes {per_layer} boxes per layer and {layers} layers. "
               "Find the number of {part} per pallet."],
        heldout=["When I stack a full pallet I put {per_layer} cartons on each tier and go {layers} tiers high; "
                 "every carton holds {per_box} {part}. What's the piece count on the pallet?",
                 "Pallet spec sheet - tiers: {layers}; cartons per tier: {per_layer}; pieces per carton: {per_box}. "
                 "Total pieces per pallet?"]),
    # ---------------- SPC ----------------
    "spc_mean": Problem(
        "spc", _readings, "({r1}+{r2}+{r3}+{r4}+{r5})/5",
        "The five readings add up to <<{r1}+{r2}+{r3}+{r4}+{r5}>> mm, and dividing by 5 gives a mean of "
        "<<{total}/5>> mm.",
        derived={"total": "{r1}+{r2}+{r3}+{r4}+{r5}"},
        train=["Five shafts from the {machine} measure {r1}, {r2}, {r3}, {r4} and {r5} mm. What is the mean "
               "diameter in mm?",
               "An SPC subgroup has the readings {r1}, {r2}, {r3}, {r4} and {r5} mm. Calculate the subgroup mean.",
               "The operator measured five {part}: {r1}, {r2}, {r3}, {r4} and {r5} mm. What is the average "
               "measurement?",
               "Find the average of these five readings from {line}: {r1}, {r2}, {r3}, {r4}, {r5} mm."],
        heldout=["For my X-bar chart I need today's point. The micrometer gave {r3}, {r1}, {r5}, {r2} and {r4} mm. "
                 "What value do I plot?",
                 "Sample of 5 {part} off the {machine} (mm): {r1} / {r2} / {r3} / {r4} / {r5}. Work out the "
                 "x-bar."]),
    "spc_range": Problem(
        "spc", _readings, "{hi}-{lo}",
        "The largest reading is {hi} mm and the smallest is {lo} mm, so the range is <<{hi}-{lo}>> mm.",
        train=["A subgroup of five readings is {r1}, {r2}, {r3}, {r4} and {r5} mm. What is the range?",
               "Five {part} from the {machine} measure {r1}, {r2}, {r3}, {r4} and {r5} mm. Find the range of the "
               "sample in mm.",
               "What is the range of these measurements from {line}: {r1}, {r2}, {r3}, {r4}, {r5} mm?",
               "The operator recorded {r1}, {r2}, {r3}, {r4} and {r5} mm on five {part}. Calculate the range in mm."],
        heldout=["For the R chart: biggest minus smallest of {r4}, {r2}, {r5}, {r1}, {r3} (mm, {machine}). What do "
                 "I write down?",
                 "How far apart are the extremes in my last sample? I got {r2}, {r5}, {r1}, {r3} and {r4} mm on "
                 "the {part}."]),
    "control_limit": Problem(
        "spc", _control_limit, "{mean}{op}3*{sigma}",
        "The {which} limit is the mean {opword} 3 sigma: <<{mean}{op}3*{sigma}>> mm.",
        train=["The process mean is {mean} mm and sigma is {sigma} mm. What is the {which} control limit at 3 "
               "sigma?",
               "Calculate the {which} control limit for a process with mean {mean} mm and standard deviation "
               "{sigma} mm, using 3-sigma limits.",
               "Parts from the {machine} have a mean length of {mean} mm with a standard deviation of {sigma} mm. "
               "Find the {which} 3-sigma control limit.",
               "For {line}, the average diameter is {mean} mm and sigma is {sigma} mm. What is the {which} control "
               "limit in mm, using mean {opword} 3 sigma?"],
        heldout=["I'm drawing the {short} on a new chart for the {machine}. The centre line sits at {mean} mm and "
                 "one standard deviation is {sigma} mm. Where does the {short} go, three sigmas out?",
                 "Centre {mean} mm, s = {sigma} mm. Set the {short} for the {part} chart (3 s from centre)."]),
    # ---------------- energy cost ----------------
    "energy_cost": Problem(
        "energy_cost", lambda r: {"kw": pick(r, 4, 60), "hours": pick(r, 6, 24), "price": pick(r, 0.12, 0.32, 0.01)},
        "{kw}*{hours}*{price}",
        "The load uses <<{kw}*{hours}>> kWh, and at {price} per kWh that costs <<{kwh}*{price}>>.",
        derived={"kwh": "{kw}*{hours}"},
        train=["The {machine} draws {kw} kW and runs for {hours} hours. Electricity costs ${price} per kWh. What is "
               "the energy cost in dollars?",
               "The compressor on {line} is rated {kw} kW and runs {hours} hours a day. At ${price} per kWh, what "
               "does it cost per day in dollars?",
               "What does it cost to run the {kw} kW {machine} for {hours} hours if power costs ${price} per kWh?",
               "{line} has a load of {kw} kW. Find the electricity cost in dollars for {hours} hours at ${price} "
               "per kWh."],
        heldout=["The meter man says our tariff is €{price} a kilowatt-hour. If my {machine} pulls {kw} kilowatts "
                 "for {hours} hours straight, how many euros is that?",
                 "Energy audit, {machine}: rated load {kw} kW; operating time {hours} h; unit price €{price}/kWh. "
                 "Cost in euros?"]),
    "energy_per_week": Problem(
        "energy_cost", lambda r: {"kw": pick(r, 2, 45, 0.5), "hours": pick(r, 8, 24), "days": pick(r, 5, 7)},
        "{kw}*{hours}*{days}",
        "Each day uses <<{kw}*{hours}>> kWh, so {days} days use <<{daily}*{days}>> kWh.",
        derived={"daily": "{kw}*{hours}"},
        train=["The {machine} draws {kw} kW for {hours} hours a day, {days} days a week. How many kWh does it use "
               "per week?",
               "The oven on {line} is rated {kw} kW and runs {hours} hours per day for {days} days. What is its "
               "energy use in kWh?",
               "How many kilowatt-hours does the {kw} kW {machine} use running {hours} hours a day for {days} days?",
               "Find the weekly energy consumption in kWh of a load of {kw} kW that runs {hours} hours daily on "
               "{days} days."],
        heldout=["We switch the {machine} on {days} days a week and leave it going {hours} hours each time. Its "
                 "motor is rated {kw} kilowatts. What's the weekly consumption in kilowatt-hours?",
                 "Consumption estimate - {days} d x {hours} h/d at {kw} kW ({machine}). Total kWh?"]),
    # ---------------- inventory ----------------
    "days_of_stock": Problem(
        "inventory", _days_of_stock, "{stock}/{daily}",
        "{stock} on hand at {daily} a day lasts <<{stock}/{daily}>> days.",
        train=["There are {stock} {part} in stock and the line uses {daily} per day. How many days of stock is "
               "that?",
               "The warehouse holds {stock} {part}. Daily usage is {daily}. How many days will the stock last?",
               "How many days of supply are {stock} {part} if {line} consumes {daily} a day?",
               "{line} uses {daily} {part} per day and {stock} are on hand. Calculate the days of stock."],
        heldout=["If nobody reorders, how long until the {part} rack is empty? The count this morning was {stock} "
                 "and we burn through {daily} every day. Answer in days.",
                 "Stock check: on hand {stock}; consumption {daily}/day. Coverage in days?"]),
    "reorder_point": Problem(
        "inventory", lambda r: {"daily": pick(r, 20, 400, 5), "lead": pick(r, 2, 21), "safety": pick(r, 50, 1000, 50)},
        "{daily}*{lead}+{safety}",
        "Usage over the lead time is <<{daily}*{lead}>>, and adding the safety stock gives a reorder point of "
        "<<{lead_use}+{safety}>>.",
        derived={"lead_use": "{daily}*{lead}"},
        train=["{line} uses {daily} {part} per day. The lead time is {lead} days and safety stock is {safety}. What "
               "is the reorder point?",
               "Daily usage of {part} is {daily}, supplier lead time is {lead} days and the safety stock is {safety} "
               "units. Calculate the reorder point.",
               "What is the reorder point for {part} if usage is {daily} per day, lead time is {lead} days and "
               "safety stock is {safety}?",
               "Find the reorder point: daily demand {daily} {part}, lead time {lead} days, safety stock {safety} "
               "{part}."],
        heldout=["The supplier needs {lead} days to deliver, we never want fewer than {safety} {part} in reserve, "
                 "and assembly eats {daily} a day. At what stock level should the kanban card go back?",
                 "When the bin count drops to what number should I raise a purchase order? Buffer {safety}, usage "
                 "{daily} per day, {lead}-day delivery."]),
    # ---------------- downtime / availability ----------------
    "availability": Problem(
        "downtime", lambda r: {"planned": one_of(r, 420, 450, 480, 510, 600, 960), "down": pick(r, 5, 120, 5)},
        "({planned}-{down})/{planned}*100",
        "The machine ran <<{planned}-{down}>> of {planned} minutes, so availability is <<{up}/{planned}*100>> "
        "percent.",
        derived={"up": "{planned}-{down}"},
        train=["The {machine} was planned to run {planned} minutes and had {down} minutes of downtime. What is its "
               "availability in percent?",
               "{line} had {down} minutes of unplanned downtime in a shift of {planned} minutes. Calculate the "
               "availability as a percentage.",
               "What is the availability, in percent, of a machine with {planned} minutes of planned time and "
               "{down} minutes of stops?",
               "During {planned} minutes of planned production the {machine} was down for {down} minutes. Find "
               "the availability in percent."],
        heldout=["Breakdowns cost me {down} min this shift on the {machine}, out of {planned} min scheduled. What "
                 "percentage of the time was it actually available?",
                 "Downtime log, {machine}: {down} min lost / {planned} min planned. Uptime %?"]),
    "run_time": Problem(
        "downtime", lambda r: {"planned": one_of(r, 450, 480, 510, 540, 600), "a": pick(r, 5, 60),
                               "b": pick(r, 5, 60), "c": pick(r, 5, 60)},
        "{planned}-{a}-{b}-{c}",
        "The stops add up to <<{a}+{b}+{c}>> minutes, leaving <<{planned}-{stops}>> minutes of run time.",
        derived={"stops": "{a}+{b}+{c}"},
        train=["The {machine} was scheduled for {planned} minutes. It stopped for {a}, {b} and {c} minutes. How "
               "many minutes did it run?",
               "A shift of {planned} minutes on {line} had three stoppages of {a}, {b} and {c} minutes. What was the "
               "run time in minutes?",
               "How many minutes of run time remain from {planned} planned minutes after stops of {a}, {b} and {c} "
               "minutes?",
               "{line} lost {a} minutes to a jam, {b} minutes to a tool change and {c} minutes waiting for material "
               "out of {planned} planned minutes. What was the actual run time in minutes?"],
        heldout=["Three hold-ups today on the {machine}: the guard sensor ({b} min), no operator ({c} min), and a "
                 "coolant leak ({a} min). Scheduled time was {planned} min. How long did we really run, in minutes?",
                 "Shift handover: planned {planned} min; stops {c}, {a}, {b} min. Net running minutes?"]),
    # ---------------- MTBF / MTTR ----------------
    "mtbf": Problem(
        "mtbf_mttr", lambda r: {"hours": pick(r, 200, 3000, 10), "fails": pick(r, 2, 12)}, "{hours}/{fails}",
        "{hours} operating hours over {fails} failures is an MTBF of <<{hours}/{fails}>> hours.",
        train=["The {machine} ran for {hours} hours and failed {fails} times. What is its MTBF in hours?",
               "Over {hours} operating hours, {line} had {fails} breakdowns. Calculate the mean time between "
               "failures in hours.",
               "What is the MTBF of the {machine} if it had {fails} failures in {hours} hours of operation?",
               "In {hours} hours of running, the {machine} broke down {fails} times. Find the mean time between "
               "failures."],
        heldout=["Maintenance asked me how long the {machine} typically runs before it quits. It has logged {hours} "
                 "running hours and {fails} breakdowns since the rebuild. What is the average, in hours?",
                 "Reliability sheet: failures {fails}; uptime {hours} h; asset {machine}. MTBF (h)?"]),
    "mttr": Problem(
        "mtbf_mttr", _mttr, "{total}/{n}", "{total} minutes over {n} repairs is <<{total}/{n}>> minutes per repair.",
        train=["The {machine} had {n} repairs last month taking {total} minutes in total. What is the MTTR in "
               "minutes?",
               "Repairs on {line} took {total} minutes over {n} breakdowns. Calculate the mean time to repair in "
               "minutes.",
               "What is the mean time to repair if {n} repairs took a total of {total} minutes?",
               "{n} breakdowns of the {machine} were fixed in a total of {total} minutes. Find the MTTR."],
        heldout=["Our fitters spent {total} minutes in all getting the {machine} back up after {n} separate faults. "
                 "On average, how long does a fix take them, in minutes?",
                 "CMMS export: {n} corrective jobs, {total} min total downtime to fix. Mean repair time (min)?"]),
    "availability_from_mtbf": Problem(
        "mtbf_mttr", lambda r: {"mtbf": pick(r, 40, 500, 5), "mttr": pick(r, 1.5, 8, 0.5)},
        "round({mtbf}/({mtbf}+{mttr})*100*10)/10",
        "Availability is MTBF over MTBF plus MTTR: <<round({mtbf}/({mtbf}+{mttr})*100*10)/10>> percent to one "
        "decimal place.",
        train=["The {machine} has an MTBF of {mtbf} hours and an MTTR of {mttr} hours. What is its inherent "
               "availability in percent, to one decimal place?",
               "The {machine} has a mean time between failures of {mtbf} hours and a mean time to repair of {mttr} "
               "hours. Calculate availability as MTBF / (MTBF + MTTR) in percent, to one decimal place.",
               "Find the availability in percent, rounded to one decimal place, of {line} with MTBF {mtbf} h and "
               "MTTR {mttr} h.",
               "With MTBF = {mtbf} hours and MTTR = {mttr} hours, what percentage availability does the {machine} "
               "have, to one decimal place?"],
        heldout=["Our {machine} typically goes {mtbf} hours between breakdowns, and each one takes {mttr} hours to "
                 "sort out. What fraction of the time, as a percent to one decimal, is it ready to run?",
                 "Repair takes {mttr} h on average, failures come every {mtbf} h. Availability % (1 dp)?"]),
    # ---------------- labour ----------------
    "labour_hours": Problem(
        "labour", lambda r: {"workers": pick(r, 2, 25), "hours": one_of(r, 7.5, 8, 8.5, 10, 12), "days": pick(r, 2, 6)},
        "{workers}*{hours}*{days}",
        "Each day takes <<{workers}*{hours}>> labour hours, so {days} days take <<{daily}*{days}>> labour hours.",
        derived={"daily": "{workers}*{hours}"},
        train=["{workers} operators each work {hours} hours a day for {days} days. How many labour hours is that?",
               "A crew of {workers} works {hours}-hour shifts on {line} for {days} days. What is the total number "
               "of labour hours?",
               "How many labour hours are used if {workers} people work {hours} hours per day for {days} days?",
               "Find the total labour hours for {workers} workers on {hours} hours a day over {days} days."],
        heldout=["For the rework project I had {workers} people in for {days} days, and each did {hours} hours a "
                 "day. How many hours do I book to the job?",
                 "Timesheet summary - heads {workers}, days {days}, hours per head per day {hours}. Total "
                 "man-hours?"]),
    "headcount": Problem(
        "labour", lambda r: {"need": pick(r, 150, 1200, 5), "per": one_of(r, 37.5, 38, 40, 42.5, 45)},
        "ceil({need}/{per})",
        "{need} hours at {per} hours per person needs <<ceil({need}/{per})>> people, rounding up to whole people.",
        train=["The plan needs {need} labour hours this week and each operator works {per} hours a week. How many "
               "operators are needed?",
               "{line} requires {need} labour hours per week. If one person works {per} hours per week, how many "
               "people are needed?",
               "How many operators are needed to cover {need} hours of work if each works {per} hours?",
               "A job requires {need} labour hours. Each worker is available for {per} hours. What is the minimum "
               "number of workers needed?"],
        heldout=["Next week's schedule adds up to {need} hours of hands-on work and nobody can do more than {per} "
                 "hours. How many people should I put on the rota?",
                 "Staffing: workload {need} h, availability {per} h per head. Heads required (whole people)?"]),
    # ---------------- material usage ----------------
    "bar_cuts": Problem(
        "material_usage", lambda r: {"bar": one_of(r, 3000, 3600, 4000, 6000), "piece": pick(r, 45, 600, 5),
                                     "kerf": one_of(r, 2, 3, 4, 5)},
        "floor({bar}/({piece}+{kerf}))",
        "Each piece uses <<{piece}+{kerf}>> mm with the saw cut, so the bar gives <<floor({bar}/{each})>> whole "
        "pieces.",
        derived={"each": "{piece}+{kerf}"},
        train=["Pieces {piece} mm long are cut from a bar of {bar} mm, losing {kerf} mm to each saw cut. How many full "
               "pieces can be cut?",
               "How many blanks of {piece} mm can be sawn from {bar} mm of bar stock if each cut wastes {kerf} mm?",
               "One bar of {bar} mm is cut into {piece} mm pieces. The saw blade removes {kerf} mm per cut. How many "
               "whole pieces do you get?",
               "The saw on {line} cuts {piece} mm lengths from {bar} mm bars, losing {kerf} mm per cut. How many "
               "complete pieces come from one bar?"],
        heldout=["I've got one {bar} mm stick of bar left. Each blank I need is {piece} mm and the bandsaw eats "
                 "{kerf} mm every time. How many good blanks can I get out of it?",
                 "Cut list: stock length {bar} mm, kerf {kerf} mm, part length {piece} mm. Whole parts per bar?"]),
    "block_weight": Problem(
        "material_usage", _weight, "{l}*{w}*{h}*{d}",
        "The volume is <<{l}*{w}*{h}>> cm³, and at {d} g/cm³ the mass is <<{volume}*{d}>> grams.",
        derived={"volume": "{l}*{w}*{h}"},
        train=["The {mat} block measures {l} cm by {w} cm by {h} cm. With a density of {d} g/cm³, what is its "
               "mass in grams?",
               "What is the mass in grams of the {l} x {w} x {h} cm {mat} block if the density is {d} g/cm³?",
               "Find the weight in grams of the {mat} plate measuring {l} cm × {w} cm × {h} cm, density {d} g/cm³.",
               "The rectangular {mat} billet is {l} cm by {w} cm by {h} cm. Given a density of {d} g/cm³, find its "
               "mass in grams."],
        heldout=["Before I lift it: the {mat} slab on my table is {h} cm thick, {w} cm across and {l} cm long, and "
                 "{mat} comes in at {d} grams per cubic centimetre. How heavy is it in grams?",
                 "Mass check - material {mat} (density {d} g/cm³), envelope {l} × {w} × {h} cm. Grams?"]),
    "material_length": Problem(
        "material_usage", lambda r: {"mm": pick(r, 120, 2400, 10), "qty": pick(r, 10, 500, 5)},
        "{qty}*{mm}/1000",
        "{qty} parts use <<{qty}*{mm}>> mm, which is <<{total}/1000>> metres.",
        derived={"total": "{qty}*{mm}"},
        train=["Each of the {part} uses {mm} mm of wire. How many metres of wire are needed for {qty} {part}?",
               "{qty} {part} are made on {line}, each needing {mm} mm of strip. How many metres of strip are used?",
               "How many metres of tube are needed to make {qty} {part} if each takes {mm} mm?",
               "A job for {qty} {part} uses {mm} mm of bar per part. Find the total bar length in metres."],
        heldout=["Before I start the batch of {qty} {part}, I want to check there's enough coil on the {machine}: "
                 "every piece pulls {mm} mm. How many metres will the batch use?",
                 "Material call-off: {mm} mm per piece x {qty} pieces. Length in m?"]),
    # ---------------- machine utilisation ----------------
    "utilisation": Problem(
        "utilisation", _utilisation, "{run}/{avail}*100",
        "{run} of {avail} hours is a utilisation of <<{run}/{avail}*100>> percent.",
        train=["The {machine} was available for {avail} hours last week and ran for {run} hours. What was its "
               "utilisation in percent?",
               "{line} ran {run} hours out of {avail} available hours. Calculate the utilisation as a percentage.",
               "What is the utilisation, in percent, of the {machine} if it ran {run} of its {avail} available "
               "hours?",
               "Out of {avail} available hours the {machine} was busy for {run} hours. Find the machine utilisation "
               "in percent."],
        heldout=["Finance wants to know if we need a second {machine}. This month it was switched on and working "
                 "{run} hours, out of {avail} it could have been. What utilisation percentage do I give them?",
                 "Asset report: hours open {avail}, hours cutting {run} ({machine}). Percent utilised?"]),
    "hours_from_utilisation": Problem(
        "utilisation", lambda r: {"avail": one_of(r, 40, 60, 80, 100, 120, 160, 168), "u": pick(r, 50, 98)},
        "{avail}*{u}/100", "{u}% of {avail} hours is <<{avail}*{u}/100>> hours.",
        train=["The {machine} is available {avail} hours a week and its utilisation is {u}%. How many hours does it "
               "actually run?",
               "At {u}% utilisation, how many hours does {line} run out of {avail} available hours?",
               "The {machine} has {avail} available hours and runs at {u}% utilisation. Find its running hours.",
               "How many hours is the {machine} in use if it is {u}% utilised over {avail} available hours?"],
        heldout=["Our target is for the {machine} to be busy {u} percent of its {avail} open hours. How many hours "
                 "of work should I load onto it?",
                 "Loading plan: capacity {avail} h, target utilisation {u}%. Hours to schedule on the {machine}?"]),
    # ---------------- changeover time ----------------
    "changeover_hours": Problem(
        "changeover", lambda r: {"n": pick(r, 2, 20), "mins": pick(r, 10, 120, 5)}, "{n}*{mins}/60",
        "{n} changeovers of {mins} minutes take <<{n}*{mins}>> minutes, which is <<{total}/60>> hours.",
        derived={"total": "{n}*{mins}"},
        train=["{line} does {n} changeovers a week, each taking {mins} minutes. How many hours are spent on "
               "changeovers per week?",
               "The {machine} has {n} changeovers per week at {mins} minutes each. What is the total changeover "
               "time in hours?",
               "How many hours of changeover time are there in a week with {n} changeovers of {mins} minutes each?",
               "Each changeover on the {machine} takes {mins} minutes and there are {n} per week. Find the weekly "
               "changeover time in hours."],
        heldout=["Every time we switch the {machine} to a new job we lose {mins} min, and the schedule has us "
                 "switching {n} times this week. How many hours is that in total?",
                 "Setup summary: {n} setups x {mins} min. Total in hours?"]),
    "changeover_saving": Problem(
        "changeover", _changeover_saving, "({old}-{new})*{n}",
        "Each changeover saves <<{old}-{new}>> minutes, and {n} of them save <<{saved}*{n}>> minutes.",
        derived={"saved": "{old}-{new}"},
        train=["A SMED project cut changeover time on the {machine} from {old} to {new} minutes. With {n} "
               "changeovers a week, how many minutes are saved per week?",
               "Changeovers on {line} used to take {old} minutes and now take {new} minutes. If there are {n} "
               "changeovers per week, how many minutes are saved each week?",
               "How many minutes per week are saved if each of {n} weekly changeovers drops from {old} to {new} "
               "minutes?",
               "The {machine} has {n} changeovers per week. Each one has been reduced from {old} minutes to {new} "
               "minutes. Find the weekly time saved in minutes."],
        heldout=["Since we pre-stage the dies, a die swap on the {machine} takes {new} min instead of {old}. We do "
                 "{n} swaps weekly. How much time do we get back each week, in minutes?",
                 "Setup reduction result: before {old} min, after {new} min, frequency {n}/week. Weekly minutes "
                 "freed up?"]),
}
