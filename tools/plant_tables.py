"""A small synthetic plant and its question splits: `python tools/plant_tables.py [OUT_DIR]`.

A build-time tool. Writes, into edgedistill/seeds/ (or OUT_DIR):
- plant/            four tables of an invented bottling line, our own text: fmea.csv (an FMEA sheet),
                    maintenance_log.csv, downtime_log.csv, spare_parts.csv;
- plant_heldout/    lubrication_schedule.csv: a fifth table no training question is asked about;
- plant_tables_{train,dev,heldout}.jsonl: questions over plant/ (teacher.table_questions, by rule, verified by
  construction); train and dev/held-out use disjoint wordings (dev and held-out share theirs);
- plant_tables_heldout_table.jsonl: questions over plant_heldout/ alone, in the held-out wordings;
- plant_dev/        vibration_survey.csv: a sixth table, never trained on, to choose recipes on, and
  plant_tables_dev_table.jsonl: questions over it alone, in the held-out wordings (the unseen-table dev split:
  choosing on heldout_table would make its figure a second look);
- plant_practice/   ten more tables a plant keeps (calibration, scrap, energy, tools, roster, quality checks,
                    suppliers, permits, compressor readings, training), headers in other naming habits, and
  plant_tables_practice.jsonl: training questions over them, train wordings only.
Deterministic: one seeded generator; rerunning writes the same bytes.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import random
import sys
from pathlib import Path

from edgedistill.tables import open_tables
from edgedistill.teacher.table_questions import rule_questions

SEEDS_DIR = Path(__file__).resolve().parent.parent / "edgedistill" / "seeds"
SEED = 20261206
N_TRAIN, N_DEV, N_HELDOUT, N_HELDOUT_TABLE = 900, 120, 200, 120
N_PRACTICE = 500
N_DEV_TABLE = 80

EQUIPMENT = {   # equipment: its components and how they fail (failure mode, effect, recommended action)
    "Depalletiser": [("Vacuum gripper", "Loss of suction", "Layer drops", "Replace the suction cups"),
                     ("Hoist chain", "Chain stretch", "Layer misaligned", "Measure and replace the chain")],
    "Rinser": [("Spray nozzle", "Nozzle blockage", "Bottles not rinsed", "Clean the nozzles every shift"),
               ("Gripper clamp", "Clamp wear", "Bottles dropped", "Replace the clamp pads")],
    "Filler": [("Filling valve", "Valve leak", "Underfilled bottles", "Replace the valve seals"),
               ("Level probe", "Probe drift", "Fill level out of tolerance", "Calibrate the probe weekly"),
               ("Product pump", "Seal leak", "Product loss", "Replace the mechanical seal")],
    "Capper": [("Capping head", "Torque drift", "Loose caps", "Check torque at each start-up"),
               ("Cap chute", "Cap jam", "Line stop", "Fit a jam sensor on the chute"),
               ("Spindle bearing", "Bearing wear", "Noise and vibration", "Lubricate and trend vibration")],
    "Labeller": [("Glue roller", "Glue build-up", "Labels skewed", "Clean the roller each shift"),
                 ("Label sensor", "Sensor misread", "Missing labels", "Teach the sensor at changeover")],
    "Infeed conveyor": [("Drive motor", "Motor overheating", "Conveyor stops", "Clean the motor fan cover"),
                        ("Conveyor chain", "Chain wear", "Bottles tip over", "Check chain tension monthly"),
                        ("Bearing", "Bearing wear", "Conveyor noise", "Grease the bearings weekly")],
    "Case packer": [("Pick head", "Vacuum loss", "Missed picks", "Inspect vacuum hoses"),
                    ("Glue gun", "Nozzle clog", "Open cases", "Purge the glue gun daily")],
    "Palletiser": [("Layer table", "Belt slip", "Layer shifted", "Retension the belt"),
                   ("Stretch wrapper", "Film break", "Loose pallets", "Replace the film roller")],
}
TECHNICIANS = ["A. Novak", "B. Keller", "C. Diaz", "D. Okafor", "E. Lindqvist"]
CAUSES = ["Jam", "Changeover", "Motor fault", "Sensor fault", "Material shortage", "Cleaning", "Electrical fault"]
TASKS = {"Preventive": "Scheduled service of the", "Corrective": "Repair of the", "Inspection": "Inspection of the"}
SUPPLIERS = ["Brenner GmbH", "Nordic Spares", "Atlas Industrial", "Kimura Parts"]
LUBRICANTS = ["EP2 grease", "ISO VG 220 oil", "Food-grade H1 grease", "ISO VG 68 oil"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def plant_tables(rng: random.Random, folder: Path) -> None:
    fmea, parts = [], []
    for equipment, failures in EQUIPMENT.items():
        for component, mode, effect, action in failures:
            s, o, d = rng.randint(3, 10), rng.randint(1, 8), rng.randint(1, 7)
            fmea.append([f"FM-{len(fmea) + 1:03d}", equipment, component, mode, effect, s, o, d, s * o * d,
                         action, rng.choice(TECHNICIANS)])
            for kind in ("kit", "spare") if rng.random() < 0.6 else ("kit",):
                parts.append([f"SP-{2001 + len(parts)}", f"{component} {kind}", equipment, rng.randint(0, 12),
                              rng.randint(1, 4), round(rng.uniform(8, 900), 2), rng.choice(SUPPLIERS),
                              rng.choice([3, 5, 7, 10, 14, 21])])
    write_csv(folder / "fmea.csv", ["FMEA ID", "Equipment", "Component", "Failure Mode", "Effect", "Severity",
                                    "Occurrence", "Detection", "RPN", "Recommended Action", "Owner"], fmea)
    write_csv(folder / "spare_parts.csv", ["Part Number", "Description", "Equipment", "Stock", "Reorder Level",
                                           "Unit Cost", "Supplier", "Lead Time Days"], parts)
    start = datetime.date(2025, 1, 6)
    log = []
    for number in range(150):
        equipment = rng.choice(list(EQUIPMENT))
        component = rng.choice(EQUIPMENT[equipment])[0]
        task = rng.choice(list(TASKS))
        part = next((p[0] for p in parts if p[2] == equipment and p[1].startswith(component)), "")
        log.append([f"WO-{1001 + number}", (start + datetime.timedelta(days=number)).isoformat(),
                    rng.choice(["Line 1", "Line 2"]), equipment, task, f"{TASKS[task]} {component.lower()}",
                    rng.choice(TECHNICIANS), rng.choice([0.5, 1, 1.5, 2, 2.5, 3, 4, 6]),
                    part if task == "Corrective" else ""])
    write_csv(folder / "maintenance_log.csv", ["Work Order", "Date", "Line", "Equipment", "Task Type",
                                               "Description", "Technician", "Hours", "Part Number"], log)
    downtime = []
    for number in range(120):
        day = start + datetime.timedelta(days=int(number * 1.4))
        downtime.append([f"DT-{501 + number}", day.isoformat(), rng.choice(["Line 1", "Line 2"]),
                         rng.choice(list(EQUIPMENT)), rng.choice(CAUSES), rng.choice([5, 10, 15, 20, 30, 45, 60, 90]),
                         rng.choice(["A", "B", "C"])])
    write_csv(folder / "downtime_log.csv", ["Event ID", "Date", "Line", "Equipment", "Cause", "Minutes", "Shift"],
              downtime)


def heldout_table(rng: random.Random, folder: Path) -> None:
    rows = []
    for equipment, failures in EQUIPMENT.items():
        for component, *_ in failures:
            if rng.random() < 0.75:
                rows.append([f"LP-{len(rows) + 1:02d}", equipment, f"{component} lube point", rng.choice(LUBRICANTS),
                             rng.choice([7, 14, 30, 90, 180]), rng.choice([5, 10, 20, 50, 100]),
                             (datetime.date(2025, 5, 1) + datetime.timedelta(days=rng.randint(0, 60))).isoformat()])
    write_csv(folder / "lubrication_schedule.csv", ["Point ID", "Equipment", "Lube Point", "Lubricant",
                                                    "Interval Days", "Quantity ml", "Last Done"], rows)


def dev_table(rng: random.Random, folder: Path) -> None:
    rows = []
    for equipment, failures in EQUIPMENT.items():
        for component, *_ in failures:
            if rng.random() < 0.8:
                velocity, alarm = round(rng.uniform(0.8, 9.5), 1), rng.choice([4.5, 7.1])
                condition = "Alarm" if velocity > alarm else "Watch" if velocity > 0.7 * alarm else "Good"
                rows.append([f"VS-{len(rows) + 1:02d}", equipment, f"{component} drive end", velocity, alarm,
                             condition, (datetime.date(2025, 6, 2) + datetime.timedelta(days=rng.randint(0, 45))
                                         ).isoformat(), rng.choice(TECHNICIANS)])
    write_csv(folder / "vibration_survey.csv", ["Survey Point", "Equipment", "Measuring Point", "Velocity (mm/s)",
                                                "Alarm (mm/s)", "Condition", "Surveyed On", "Analyst"], rows)


def _dates(rng: random.Random, n: int, start=datetime.date(2025, 1, 3), span: int = 170) -> list[str]:
    return sorted((start + datetime.timedelta(days=rng.randint(0, span))).isoformat() for _ in range(n))


# Practice tables: other records a plant keeps, under other naming habits (abbreviations, units in the header), so
# a student trained on them reads a schema instead of remembering four tables. Training questions only.
def practice_tables(rng: random.Random, folder: Path) -> None:
    c = rng.choice
    areas, lines = ["Filling hall", "Utilities", "Warehouse", "Packaging"], ["Line 1", "Line 2"]
    people = ["J. Berg", "R. Osei", "T. Meyer", "N. Costa", "H. Ito", "F. Dubois"]
    n = 30
    tables = {
        "calibration_log": (["Instrument Tag", "Instrument Type", "Area", "Last Calibrated", "Interval (months)",
                             "Result", "Calibrated By"],
                            [[f"{c(['PT', 'TT', 'FT', 'LS', 'WT'])}-{101 + i}", c(["Pressure transmitter",
                              "Thermocouple", "Flow meter", "Level switch", "Load cell"]), c(areas), d,
                              c([3, 6, 12]), c(["Pass", "Pass", "Adjusted", "Fail"]), c(people)]
                             for i, d in enumerate(_dates(rng, n))]),
        "scrap_log": (["Scrap Ref", "Date", "Line", "Product", "Reason", "Bottles", "Cost EUR"],
                      [[f"SC-{301 + i}", d, c(lines), c(["0.5 L water", "1 L juice", "1.5 L soda", "2 L water"]),
                        c(["Underfill", "Crooked label", "Loose cap", "Crushed bottle", "Wrong date code"]),
                        (b := rng.randint(5, 400)), round(b * rng.uniform(0.08, 0.3), 2)]
                       for i, d in enumerate(_dates(rng, n))]),
        "energy_meter": (["Meter", "Area", "Month", "kWh", "Peak kW"],
                         [[f"EM-{i % 6 + 1}", areas[i % 4], f"2025-{i // 6 + 1:02d}-01", rng.randint(8000, 60000),
                           round(rng.uniform(40, 400), 1)] for i in range(n)]),
        "tool_crib": (["Tool No", "Tool", "Cabinet", "Qty On Hand", "Min Qty", "Unit Price"],
                      [[f"T-{501 + i}", f"{c(['Torque wrench', 'Hex key set', 'Multimeter', 'Pipe wrench', 'Feeler gauge', 'Grease gun'])} {i + 1}",
                        c(["Cabinet A", "Cabinet B", "Cabinet C"]), rng.randint(0, 9), rng.randint(1, 3),
                        round(rng.uniform(9, 320), 2)] for i in range(n)]),
        "shift_roster": (["Emp ID", "Employee", "Shift", "Role", "Line", "Hired"],
                         [[f"E{1001 + i}", f"{c(['A.', 'B.', 'C.', 'D.', 'G.', 'M.'])} {c(['Khan', 'Silva', 'Novak', 'Moreau', 'Berg', 'Rossi', 'Park', 'Adeyemi'])} {i}",
                           c(["A", "B", "C"]), c(["Operator", "Technician", "Supervisor", "Quality"]), c(lines), d]
                          for i, d in enumerate(_dates(rng, n, datetime.date(2015, 1, 1), 3600))]),
        "quality_checks": (["Check ID", "Date", "Line", "Check", "Samples", "Defects", "Inspector"],
                           [[f"QC-{701 + i}", d, c(lines), c(["Fill volume", "Cap torque", "Label position",
                             "Seal integrity"]), (s_ := c([20, 32, 50])), rng.randint(0, s_ // 8), c(people)]
                            for i, d in enumerate(_dates(rng, n))]),
        "supplier_list": (["Supplier", "Country", "Category", "Rating (1-5)", "Lead Time (days)"],
                          [[f"{c(['Alpen', 'Baltic', 'Cedar', 'Delta', 'Everest', 'Fjord', 'Granite', 'Harbor'])} {c(['Supply', 'Industrial', 'Components', 'Trading'])} {i + 1}",
                            c(["Germany", "Poland", "Italy", "Spain", "Japan"]), c(["Bearings", "Seals", "Electrical",
                            "Packaging", "Chemicals"]), rng.randint(1, 5), c([3, 5, 7, 10, 14, 30])] for i in range(n)]),
        "work_permits": (["Permit No", "Permit Type", "Area", "Issued On", "Duration (h)", "Approved By"],
                         [[f"WP-{2001 + i}", c(["Hot work", "Confined space", "Electrical isolation",
                           "Working at height"]), c(areas), d, c([1, 2, 4, 8]), c(people)]
                          for i, d in enumerate(_dates(rng, n))]),
        "compressor_log": (["Reading", "Date", "Compressor", "Pressure (bar)", "Oil Temp (C)", "Run Hours"],
                           [[f"CR-{i + 1:03d}", d, c(["C1", "C2", "C3"]), round(rng.uniform(6.2, 8.1), 1),
                             round(rng.uniform(60, 95), 1), 20000 + 24 * i] for i, d in enumerate(_dates(rng, n))]),
        "training_records": (["Record", "Employee", "Course", "Completed", "Score (%)"],
                             [[f"TR-{i + 1:03d}", c(people), c(["LOTO", "Forklift", "First aid", "GMP",
                               "Chemical handling"]), d, rng.randint(55, 100)] for i, d in enumerate(_dates(rng, n))]),
    }
    for name, (header, rows) in tables.items():
        write_csv(folder / f"{name}.csv", header, rows)


def write_split(path: Path, questions) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for q in questions:
            row = {"id": q.id, "question": q.question, "answer": q.answer, "answer_type": "rows", "query": q.query,
                   "topic": q.topic, "source": q.source}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(SEEDS_DIR), help="folder to write into (default: the package's seeds)")
    out = Path(parser.parse_args(argv).out)
    rng = random.Random(SEED)
    plant_tables(rng, out / "plant")
    heldout_table(rng, out / "plant_heldout")
    seen = open_tables([out / "plant"])
    everything = rule_questions(seen, seed=SEED, count=N_TRAIN + N_DEV + N_HELDOUT, wordings=("train", "heldout"),
                                source="edgedistill-plant")
    train = [q for q in everything if q.topic.endswith("/train")][:N_TRAIN]
    rest = [q for q in everything if q.topic.endswith("/heldout")]
    dev, heldout = rest[:N_DEV], rest[N_DEV:N_DEV + N_HELDOUT]
    unseen = rule_questions(open_tables([out / "plant_heldout"]), seed=SEED + 1, count=N_HELDOUT_TABLE,
                            wordings=("heldout",), source="edgedistill-plant")
    practice_tables(random.Random(SEED + 2), out / "plant_practice")     # its own generator: the plant stays as it was
    practice = rule_questions(open_tables([out / "plant_practice"]), seed=SEED + 2, count=N_PRACTICE,
                              wordings=("train",), source="edgedistill-plant")
    dev_table(random.Random(SEED + 3), out / "plant_dev")       # added later, its own generator as well
    unseen_dev = rule_questions(open_tables([out / "plant_dev"]), seed=SEED + 3, count=N_DEV_TABLE,
                                wordings=("heldout",), source="edgedistill-plant")
    for name, split, prefix in (("train", train, "pt-train"), ("dev", dev, "pt-dev"),
                                ("heldout", heldout, "pt-heldout"), ("heldout_table", unseen, "pt-unseen"),
                                ("practice", practice, "pt-practice"), ("dev_table", unseen_dev, "pt-devtable")):
        for number, q in enumerate(split, 1):
            q.id, q.topic = f"{prefix}-{number:04d}", q.topic.rsplit("/", 1)[0]
        write_split(out / f"plant_tables_{name}.jsonl", split)
        print(f"plant_tables_{name}.jsonl: {len(split)} questions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
