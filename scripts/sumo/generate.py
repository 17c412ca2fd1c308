#!/usr/bin/env python3
"""Independent truth for the `traffic.incident` rule: Eclipse SUMO runs converted to citybrain.

Each *scenario* (see `SCENARIOS`) is one microscopic simulation, deterministic for its seed:

1. **Network** — `netgenerate` builds a grid (signalised: every junction a traffic light), a
   spider net (signalised) or a random net (unsignalised priority junctions, 1–3 lanes drawn at
   random). Lanes are SUMO lanes: index 0 is the rightmost.
2. **Demand with a rush hour** — trips (70 % from a fringe edge to another, as through traffic;
   the rest between random edges where a trip can start and end, weighted by lanes), departing
   as a non-homogeneous Poisson process whose rate rises from `base` to `peak` vehicles/hour
   in a bell around the middle of the run (σ = 0.18 of the run): one rush hour per run. SUMO routes each trip
   when it is inserted.
3. **Detectors** — one E1 induction loop per lane of every edge, `LOOP_M` metres before the
   lane's end (near the stop line), aggregated every 30 s (`period="30"`).
4. **Stalls** — with TraCI, at each stall's time a vehicle is inserted on the chosen lane of a
   multi-lane edge and `setStop` holds it for the stall's minutes over that lane's loop, with
   lane changing off, so it neither moves nor leaves its lane. The ground truth is when SUMO
   reports it stopped and when it moves again. SUMO's own teleport reports (a car removed
   after standing 300 s at the head of a lane) go to the truth too, as `sumo_blockages`:
   blockages the simulation made by itself.
5. **Conversion** — the network becomes a citybrain city model (CONTRACT §3: a district, four
   cells tiling its box, one segment per edge with its length, speed limit, lanes, road class
   and up/downstream edges, one detector per lane with its lane index, stations), with SUMO's
   x/y mapped to lon/lat by a local offset around a fixed origin. The loops' intervals become a
   recording (CONTRACT §2/§4: one `city/traffic/detector/{id}` line per loop and 30-s
   interval, in time order; occupancy as a 0..1 fraction, speed km/h, null when count = 0).

Outputs per scenario, in the output directory: `NAME.city.geojson`, `NAME.jsonl.gz`,
`NAME.truth.json` (`{"scenario", "start_ms", "end_ms", "hours", "rush_hours", "stalls":
[{segment, lane, start_ms, end_ms, …}], "sumo_blockages": [{segment, lane, start_ms, end_ms,
reason}]}`). With `--loops5m NAME`, scenario NAME also gets a 300-s twin of every loop
(`period="300"`, same lane and position; passive, so the other files stay byte-identical) and
`NAME.loops5m.json.gz`: SUMO's own 5-minute loop output, the truth of citybrain's 5-minute
detector windows (see `loops_5m`). Run:

    pip install eclipse-sumo sumolib traci      # 1.28.0
    python3 scripts/sumo/generate.py tests/fixtures/sumo --loops5m grid2-stalls  # every scenario
    python3 scripts/sumo/generate.py OUT --only grid2-stalls        # one of them

Each scenario takes well under a few minutes on two cores. The same seed gives the same
files (SUMO is deterministic for a given `--seed` and inputs; no wall-clock enters the output).
"""

import argparse
import gzip
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import sumo
import sumolib
import traci

BIN = os.path.join(sumo.SUMO_HOME, "bin")
# 2026-03-02 07:00 Asia/Shanghai (23:00 UTC the day before): runs start at 7 in the morning.
T0_MS = 1772406000000
ORIGIN_LON, ORIGIN_LAT = 121.40, 31.20
# One scenario: network, demand, stalls. Times in seconds from the start of the run.
SCENARIOS = [
    # No incident: two signalised runs, each with a rush hour; one unsignalised.
    dict(name="grid2-quiet", seed=11, net="grid", lanes=2, size=4, length=200, duration=7200,
         base=2000, peak=5500, stalls=[]),
    dict(name="grid3-quiet", seed=12, net="grid", lanes=3, size=3, length=250, duration=7200,
         base=2000, peak=6000, stalls=[]),
    dict(name="spider2-quiet", seed=13, net="spider", lanes=2, size=5, length=150, duration=5400,
         base=2000, peak=5000, stalls=[]),
    dict(name="rand-quiet", seed=14, net="rand", lanes=3, size=20, length=220, duration=5400,
         base=800, peak=2400, stalls=[]),
    # Stalls of 8–15 minutes at several places and times, off-peak and in the rush hour.
    dict(name="grid2-stalls", seed=21, net="grid", lanes=2, size=4, length=200, duration=7200,
         base=2000, peak=5500, stalls=[(900, 10), (2400, 12), (3600, 8), (5100, 15), (6000, 9)]),
    dict(name="grid3-stalls", seed=22, net="grid", lanes=3, size=3, length=250, duration=6000,
         base=2000, peak=6000, stalls=[(1200, 9), (2700, 14), (4200, 8)]),
    dict(name="spider2-stalls", seed=23, net="spider", lanes=2, size=5, length=150, duration=5400,
         base=2000, peak=5000, stalls=[(1000, 11), (2600, 8), (3900, 10)]),
    dict(name="rand-stalls", seed=24, net="rand", lanes=3, size=20, length=220, duration=5400,
         base=800, peak=2400, stalls=[(1100, 10), (3000, 12)]),
]
PEAK_AT, PEAK_WIDTH = 0.5, 0.18  # rush-hour centre and σ as fractions of the run
THROUGH = 0.7  # share of trips from a fringe edge to another


def run(cmd):
    """Runs a SUMO tool, failing loudly."""
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build_net(sc, work):
    """Builds the scenario's network with netgenerate; returns the .net.xml path."""
    net = os.path.join(work, "net.net.xml")
    cmd = [os.path.join(BIN, "netgenerate"), "--seed", str(sc["seed"]), "-o", net,
           "--default.lanenumber", str(sc["lanes"]), "--default.speed", "13.89",
           "--no-turnarounds", "true", "--tls.cycle.time", "90", "--no-warnings", "true"]
    if sc["net"] == "grid":
        cmd += ["--grid", "--grid.number", str(sc["size"]), "--grid.length", str(sc["length"]),
                "--grid.attach-length", "150", "--default-junction-type", "traffic_light"]
    elif sc["net"] == "spider":
        cmd += ["--spider", "--spider.arm-number", str(sc["size"]), "--spider.circle-number", "2",
                "--spider.space-radius", str(sc["length"]), "--spider.omit-center",
                "--default-junction-type", "traffic_light"]
    else:
        cmd += ["--rand", "--rand.iterations", str(sc["size"]), "--rand.min-distance", "150",
                "--rand.max-distance", str(sc["length"]), "--rand.grid", "--random-lanenumber",
                "--default-junction-type", "priority"]
    run(cmd)
    return net


def demand(sc, net, work, rng):
    """Writes rush-hour trips between random edges; returns the .rou.xml path."""
    edges = [e for e in net.getEdges() if e.allows("passenger") and e.getLength() > 40]
    # Most trips cross the network (enter on a fringe edge, leave on another), as through traffic
    # does; the rest start and end anywhere.
    sources = [e for e in edges if not e.getIncoming()] or edges
    sinks = [e for e in edges if not e.getOutgoing()] or edges
    # Other trips start where a trip can continue and end where one can arrive from.
    starts = [e for e in edges if e.getOutgoing()]
    ends = [e for e in edges if e.getIncoming()]
    dur = sc["duration"]

    def rate(t):  # vehicles per second
        bell = math.exp(-0.5 * ((t / dur - PEAK_AT) / PEAK_WIDTH) ** 2)
        return (sc["base"] + (sc["peak"] - sc["base"]) * bell) / 3600.0

    top = sc["peak"] / 3600.0
    trips, t, n = [], 0.0, 0
    while True:  # thinning of a Poisson process at the top rate
        t += rng.expovariate(top)
        if t >= dur - 60:
            break
        if rng.random() * top > rate(t):
            continue
        if rng.random() < THROUGH:
            a, b = rng.choice(sources), rng.choice(sinks)
        else:
            a = rng.choices(starts, [e.getLaneNumber() for e in starts])[0]
            b = rng.choices(ends, [e.getLaneNumber() for e in ends])[0]
        if a == b or a.getToNode() == b.getFromNode() and b.getToNode() == a.getFromNode():
            continue
        trips.append((t, a.getID(), b.getID()))
        n += 1
    path = os.path.join(work, "trips.rou.xml")
    with open(path, "w") as f:
        f.write("<routes>\n")
        for i, (t, a, b) in enumerate(trips):
            f.write(f'  <trip id="t{i}" depart="{t:.1f}" from="{a}" to="{b}" departLane="best" '
                    f'departSpeed="max"/>\n')
        f.write("</routes>\n")
    return path


LOOP_M = 20.0  # loop position, metres before the lane's end
TELEPORT_S = 300  # SUMO removes a car that has stood this long at the head of a lane


LOOPS5M_SUFFIX = "__300"  # SUMO id suffix of a loop's 300-s twin (`--loops5m`)


def detectors(net, work):
    """Writes one E1 loop per lane; returns (additional path, output path, loops)."""
    out = os.path.join(work, "e1.xml")
    loops = []
    path = os.path.join(work, "e1.add.xml")
    with open(path, "w") as f:
        f.write("<additional>\n")
        for e in sorted(net.getEdges(), key=lambda e: e.getID()):
            if e.getFunction() == "internal":
                continue
            for lane in e.getLanes():
                pos = max(lane.getLength() - LOOP_M, lane.getLength() / 2)
                lid = f"{e.getID()}_{lane.getIndex()}"
                loops.append((lid, e.getID(), lane.getIndex(), pos, lane))
                f.write(f'  <inductionLoop id="{lid}" lane="{lane.getID()}" pos="{pos:.2f}" '
                        f'period="30" file="{out}"/>\n')
        f.write("</additional>\n")
    return path, out, loops


def detectors_300(loops, work):
    """Writes a 300-s twin of every loop (same lane and position, `period="300"`, its own
    output file); returns (additional path, output path).

    E1 loops are passive: they read vehicles and draw no random number, so the twins change
    nothing in the simulation (the 30-s recording regenerates byte-identical with them).
    """
    out = os.path.join(work, "e1-300.xml")
    path = os.path.join(work, "e1-300.add.xml")
    with open(path, "w") as f:
        f.write("<additional>\n")
        for lid, _edge, _idx, pos, lane in loops:
            f.write(f'  <inductionLoop id="{lid}{LOOPS5M_SUFFIX}" lane="{lane.getID()}" pos="{pos:.2f}" '
                    f'period="300" file="{out}"/>\n')
        f.write("</additional>\n")
    return path, out


def pick_stall_lanes(sc, net, loops, rng):
    """Chooses a lane of a multi-lane, long-enough edge for each stall (distinct edges)."""
    cand = [l for l in loops
            if net.getEdge(l[1]).getLaneNumber() >= 2 and l[4].getLength() > 80
            and net.getEdge(l[1]).getToNode().getType() != "dead_end"
            and net.getEdge(l[1]).getOutgoing()]
    rng.shuffle(cand)
    chosen, used = [], set()
    for l in cand:
        if l[1] not in used:
            chosen.append(l)
            used.add(l[1])
        if len(chosen) == len(sc["stalls"]):
            break
    return chosen


def simulate(sc, netfile, routes, add, work, rng, net, loops):
    """Runs SUMO under TraCI, stalling vehicles; returns the ground-truth stalls."""
    lanes = pick_stall_lanes(sc, net, loops, rng)
    plan = []
    for (at, minutes), (lid, edge, idx, pos, lane) in zip(sc["stalls"], lanes):
        # The stalled car stands over the loop (its front 0.5–4.5 m past it; cars are 5 m
        # long): a breakdown in the loop's view near the stop line. A car stalled a few metres
        # past the loop (tried: 6–15 m) leaves the loop an empty lane, as SUMO's drivers change
        # lanes well before it and no queue forms over the loop; one loop cannot tell that from
        # an unused lane (README, "Incidents in signalised, real traffic").
        ahead = rng.uniform(0.5, 4.5)
        stop = min(pos + ahead, lane.getLength() - 0.1)
        plan.append(dict(at=at, minutes=minutes, edge=edge, lane=idx, stop=stop, vid=f"stall{len(plan)}",
                         start=None, end=None, added=False))
    cmd = [os.path.join(BIN, "sumo"), "-n", netfile, "-r", routes, "-a", add, "--seed", str(sc["seed"]),
           "--begin", "0", "--end", str(sc["duration"]), "--step-length", "1", "--no-step-log", "true",
           "--ignore-route-errors", "true", "--time-to-teleport", str(TELEPORT_S),
           "--log", os.path.join(work, "sumo.log"),
           "--duration-log.disable", "true"]
    traci.start(cmd)
    try:
        for step in range(sc["duration"]):
            for p in plan:
                if not p["added"] and step >= p["at"]:
                    rid = f"r_{p['vid']}"
                    traci.route.add(rid, [p["edge"]])
                    traci.vehicle.add(p["vid"], rid, depart="now", departLane=str(p["lane"]),
                                      departPos=str(max(p["stop"] - 60.0, 0.0)), departSpeed="0")
                    traci.vehicle.setLaneChangeMode(p["vid"], 0)
                    traci.vehicle.setStop(p["vid"], p["edge"], pos=p["stop"], laneIndex=p["lane"],
                                          duration=p["minutes"] * 60.0)
                    p["added"] = True
            traci.simulationStep()
            present = set(traci.vehicle.getIDList())
            for p in plan:
                if p["added"] and p["end"] is None and p["vid"] in present:
                    stopped = traci.vehicle.isStopped(p["vid"])
                    if stopped and p["start"] is None:
                        p["start"] = step + 1
                    elif not stopped and p["start"] is not None:
                        p["end"] = step + 1
                elif p["start"] is not None and p["end"] is None and p["vid"] not in present:
                    p["end"] = step + 1
    finally:
        traci.close()
    for p in plan:
        if p["start"] is None:
            sys.exit(f"{sc['name']}: stall {p['vid']} never stopped")
        if p["end"] is None:
            p["end"] = sc["duration"]
    return [dict(segment=p["edge"], lane=int(p["lane"]), start_ms=T0_MS + p["start"] * 1000,
                 end_ms=T0_MS + p["end"] * 1000, minutes=p["minutes"],
                 stop_pos_m=round(p["stop"], 1)) for p in plan]


TELEPORT = re.compile(r"Teleporting vehicle '([^']*)'; waited too long \(([^)]*)\), lane='([^']*)', "
                      r"time=([0-9]+(?:\.[0-9]+)?)")


def sumo_blockages(log, loops):
    """SUMO's own record of lanes blocked by a vehicle that stood there `TELEPORT_S` seconds.

    SUMO removes ("teleports") a vehicle that has not moved for `--time-to-teleport` seconds at
    the head of a lane (a jam, a car that cannot merge out of a lane that does not lead where it
    goes, or one that cannot find a gap to yield into). Such a lane was blocked by a standing car
    for that long: not a stall we planted, but a real blockage of the simulation, listed in the
    ground truth as `sumo_blockages` so that an alarm for it can be told from a false one.
    """
    lanes = {f"{l[1]}_{l[2]}": (l[1], l[2]) for l in loops}
    out = []
    if not os.path.exists(log):
        return out
    with open(log) as f:
        for m in TELEPORT.finditer(f.read()):
            vid, reason, lane, t = m.groups()
            if lane in lanes and not vid.startswith("stall"):
                end = int(float(t))
                out.append(dict(segment=lanes[lane][0], lane=lanes[lane][1], reason=reason,
                                start_ms=T0_MS + (end - TELEPORT_S) * 1000, end_ms=T0_MS + end * 1000))
    out.sort(key=lambda b: (b["start_ms"], b["segment"], b["lane"]))
    return out


def lonlat(x, y):
    """A local offset around the origin: metres east/north to WGS84, rounded to 1e-7°."""
    lat = ORIGIN_LAT + y / 110_574.0
    lon = ORIGIN_LON + x / (111_320.0 * math.cos(math.radians(ORIGIN_LAT)))
    return [round(lon, 7), round(lat, 7)]


def road_class(e):
    """A citybrain road class from a SUMO edge's lanes."""
    return {1: "branch", 2: "secondary"}.get(e.getLaneNumber(), "arterial")


def city_model(net, loops):
    """The citybrain city model of a SUMO network (CONTRACT §3)."""
    (x0, y0), (x1, y1) = net.getBBoxXY()
    x0, y0, x1, y1 = x0 - 50, y0 - 50, x1 + 50, y1 + 50

    def box(a, b, c, d):
        return {"type": "Polygon", "coordinates": [[lonlat(a, b), lonlat(c, b), lonlat(c, d), lonlat(a, d),
                                                     lonlat(a, b)]]}

    feats = [{"type": "Feature", "geometry": box(x0, y0, x1, y1),
              "properties": {"kind": "district", "id": "sumo", "name": "SUMO"}}]
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    for i, (a, b, c, d) in enumerate([(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)]):
        feats.append({"type": "Feature", "geometry": box(a, b, c, d),
                      "properties": {"kind": "cell", "id": f"cell-{i}", "district": "sumo",
                                     "officers": [f"officer-{i}"]}})
    edges = [e for e in sorted(net.getEdges(), key=lambda e: e.getID()) if e.getFunction() != "internal"]
    for e in edges:
        shape = [lonlat(x, y) for x, y in e.getShape()]
        feats.append({"type": "Feature", "geometry": {"type": "LineString", "coordinates": shape},
                      "properties": {"kind": "segment", "id": e.getID(), "district": "sumo",
                                     "length_m": round(e.getLength(), 2),
                                     "speed_limit_kmh": round(e.getSpeed() * 3.6, 2),
                                     "lanes": e.getLaneNumber(), "road_class": road_class(e),
                                     "downstream": sorted({o.getID() for o in e.getOutgoing()})}})
    for lid, edge, idx, pos, lane in loops:
        x, y = sumolib.geomhelper.positionAtShapeOffset(lane.getShape(), pos)
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": lonlat(x, y)},
                      "properties": {"kind": "detector", "id": lid, "segment": edge, "lane": idx}})
    feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": lonlat(xm, ym)},
                  "properties": {"kind": "station", "id": "station-fire-0", "type": "fire", "district": "sumo"}})
    return {"type": "FeatureCollection", "features": feats}


def recording(e1, loops):
    """The loops' 30-s intervals as recording lines, in time order (then by detector id)."""
    seg = {l[0]: (l[1], l[2]) for l in loops}
    rows = []
    for el in ET.parse(e1).getroot().iter("interval"):
        lid = el.get("id")
        begin = float(el.get("begin"))
        end = float(el.get("end"))
        if end - begin < 29.5:  # a truncated last interval
            continue
        count = int(el.get("nVehContrib"))
        speed = float(el.get("speed"))
        segment, lane = seg[lid]
        ts = T0_MS + int(round(begin * 1000))
        payload = {"sensor": lid, "segment": segment, "ts": ts, "interval_s": 30, "count": count,
                   "lane": lane, "flow_vph": count * 120,
                   # SUMO's occupancy can exceed 100 % by rounding; the contract's is 0..1.
                   "occupancy": min(round(float(el.get("occupancy")) / 100.0, 4), 1.0),
                   "speed_kmh": round(speed * 3.6, 2) if count > 0 and speed >= 0 else None}
        rows.append((ts, lid, json.dumps({"topic": f"city/traffic/detector/{lid}", "payload": payload},
                                        separators=(",", ":"))))
    rows.sort()
    return [r[2] for r in rows]


def loops_5m(e1_300, sc):
    """SUMO's own 300-s loop output as citybrain's 5-minute detector windows (the independent
    truth of `tests/incidents.rs` `detector_windows_equal_sumo_5_minute_loop_output`).

    Per loop (its citybrain detector id) and window start (epoch ms, mapped from SUMO time as
    the recording maps it; `T0_MS` is a multiple of 300 s, so SUMO's 300-s intervals are
    citybrain's epoch-aligned 5-minute windows): `[start_ms, count, occupancy, speed_kmh]`,
    with count = `nVehContrib`, occupancy = SUMO's % / 100 (unrounded by us: SUMO's 2
    decimals of a percent are exact at 6 decimals of a fraction, and not clamped to 1) and
    speed_kmh = m/s × 3.6 (exact at 3 decimals) or null where SUMO writes -1 (no vehicle).
    """
    if T0_MS % 300_000:
        sys.exit("T0_MS is not a multiple of 300 s: SUMO's 300-s intervals would not be 5-minute windows")
    loops = {}
    for el in ET.parse(e1_300).getroot().iter("interval"):
        begin, end = float(el.get("begin")), float(el.get("end"))
        if end - begin < 299.5:  # a truncated last interval
            continue
        lid = el.get("id").removesuffix(LOOPS5M_SUFFIX)
        speed = float(el.get("speed"))
        loops.setdefault(lid, []).append(
            [T0_MS + int(round(begin * 1000)), int(el.get("nVehContrib")),
             round(float(el.get("occupancy")) / 100.0, 6),
             round(speed * 3.6, 3) if speed >= 0 else None])
    for rows in loops.values():
        rows.sort()
    return {"scenario": sc["name"], "source": "SUMO E1 inductionLoop, period 300 s, default precision",
            "start_ms": T0_MS, "end_ms": T0_MS + sc["duration"] * 1000, "window_ms": 300_000,
            "columns": ["start_ms", "count", "occupancy", "speed_kmh"],
            "loops": dict(sorted(loops.items()))}


def generate(sc, out, with_5m=False):
    """Runs one scenario and writes its three files into `out` (four with `with_5m`)."""
    rng = random.Random(sc["seed"])
    work = tempfile.mkdtemp(prefix=f"sumo-{sc['name']}-")
    try:
        netfile = build_net(sc, work)
        net = sumolib.net.readNet(netfile)
        routes = demand(sc, net, work, rng)
        add, e1, loops = detectors(net, work)
        if with_5m:
            add_300, e1_300 = detectors_300(loops, work)
            add = f"{add},{add_300}"
        stalls = simulate(sc, netfile, routes, add, work, rng, net, loops)
        lines = recording(e1, loops)
        with open(os.path.join(out, f"{sc['name']}.city.geojson"), "w") as f:
            json.dump(city_model(net, loops), f, separators=(",", ":"))
        with gzip.GzipFile(os.path.join(out, f"{sc['name']}.jsonl.gz"), "wb", mtime=0) as f:
            f.write(("\n".join(lines) + "\n").encode())
        truth = {"scenario": sc["name"], "start_ms": T0_MS, "end_ms": T0_MS + sc["duration"] * 1000,
                 "hours": sc["duration"] / 3600.0, "rush_hours": 1, "network": sc["net"],
                 "lanes": sc["lanes"], "signalised": sc["net"] != "rand", "stalls": stalls,
                 "sumo_blockages": sumo_blockages(os.path.join(work, "sumo.log"), loops)}
        with open(os.path.join(out, f"{sc['name']}.truth.json"), "w") as f:
            json.dump(truth, f, indent=1)
        if with_5m:
            # A line per loop keeps the file diffable; gzip keeps it small.
            truth5 = loops_5m(e1_300, sc)
            text = "{" + ",\n".join(
                f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in truth5.items()
                if k != "loops") + ',\n"loops":{\n' + ",\n".join(
                f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in truth5["loops"].items()
            ) + "}}\n"
            with gzip.GzipFile(os.path.join(out, f"{sc['name']}.loops5m.json.gz"), "wb", mtime=0) as f:
                f.write(text.encode())
        print(f"{sc['name']}: {len(loops)} loops, {len(lines)} readings, {len(stalls)} stalls", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output directory")
    ap.add_argument("--only", action="append", help="scenario name (repeatable)")
    ap.add_argument("--loops5m", action="append", default=[], metavar="NAME",
                    help="also write SUMO's own 300-s loop output of scenario NAME as "
                         "NAME.loops5m.json.gz (repeatable)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for sc in SCENARIOS:
        if not args.only or sc["name"] in args.only:
            generate(sc, args.out, with_5m=sc["name"] in args.loops5m)


if __name__ == "__main__":
    main()
