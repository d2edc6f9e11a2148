"""IEEE 11073-10101 (MDC) and LOINC codes of the vital signs Tianfu scores, with their units.

Vendors differ (monitoring.md §3.2): GE sends EtCO2 as 151712, Mindray/Comen send NIBP as cuff
pressures and temperature as MDC_TEMP. Every known variant maps to one canonical parameter; an unknown
code is kept and reported as unmapped, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    key: str  # canonical name used everywhere in the module
    label_en: str
    label_zh: str
    ucum: str  # unit in UCUM, as FHIR expects
    loinc: str


PARAMETERS: dict[str, Parameter] = {
    p.key: p
    for p in (
        Parameter("heart_rate", "Heart rate", "心率", "/min", "8867-4"),
        Parameter("pulse_rate", "Pulse rate", "脉率", "/min", "8889-8"),
        Parameter("spo2", "SpO2", "血氧饱和度", "%", "59408-5"),
        Parameter("respiratory_rate", "Respiratory rate", "呼吸频率", "/min", "9279-1"),
        Parameter("systolic_bp", "Systolic BP", "收缩压", "mm[Hg]", "8480-6"),
        Parameter("diastolic_bp", "Diastolic BP", "舒张压", "mm[Hg]", "8462-4"),
        Parameter("mean_bp", "Mean BP", "平均压", "mm[Hg]", "8478-0"),
        Parameter("temperature", "Temperature", "体温", "Cel", "8310-5"),
        Parameter("etco2", "EtCO2", "呼气末二氧化碳", "mm[Hg]", "19891-1"),
    )
}

# MDC code → canonical parameter. NIBP first: cuff and arterial variants carry the same meaning here.
MDC_TO_PARAMETER: dict[int, str] = {
    147842: "heart_rate",  # MDC_ECG_HEART_RATE
    149530: "pulse_rate",  # MDC_PULS_OXIM_PULS_RATE
    149546: "pulse_rate",  # MDC_PULS_RATE_NON_INV
    150456: "spo2",  # MDC_PULS_OXIM_SAT_O2
    151562: "respiratory_rate",  # MDC_RESP_RATE
    150021: "systolic_bp",  # MDC_PRESS_BLD_NONINV_SYS
    150022: "diastolic_bp",  # MDC_PRESS_BLD_NONINV_DIA
    150023: "mean_bp",  # MDC_PRESS_BLD_NONINV_MEAN
    150301: "systolic_bp",  # MDC_PRESS_CUFF_SYS (Mindray, Comen)
    150302: "diastolic_bp",  # MDC_PRESS_CUFF_DIA
    150303: "mean_bp",  # MDC_PRESS_CUFF_MEAN
    150364: "temperature",  # MDC_TEMP_BODY
    150344: "temperature",  # MDC_TEMP (Mindray, Comen exports)
    188496: "temperature",  # MDC_TEMP_AXIL
    151708: "etco2",  # MDC_AWAY_CO2_ET
    151712: "etco2",  # MDC_CONC_AWAY_CO2_EXP (GE)
}

PARAMETER_TO_MDC: dict[str, int] = {
    "heart_rate": 147842,
    "pulse_rate": 149530,
    "spo2": 150456,
    "respiratory_rate": 151562,
    "systolic_bp": 150021,
    "diastolic_bp": 150022,
    "mean_bp": 150023,
    "temperature": 150364,
    "etco2": 151708,
}

# MDC units that need converting to the canonical unit; others are taken as canonical.
MDC_DEGF = 268160
MDC_KPA = 268240

LOINC_TO_PARAMETER: dict[str, str] = {
    "8867-4": "heart_rate",
    "8889-8": "pulse_rate",
    "59408-5": "spo2",
    "2708-6": "spo2",
    "9279-1": "respiratory_rate",
    "8480-6": "systolic_bp",
    "8462-4": "diastolic_bp",
    "8478-0": "mean_bp",
    "8310-5": "temperature",
    "8328-7": "temperature",
    "19891-1": "etco2",
}


def convert(parameter: str, value: float, unit_code: int | None) -> float:
    """Convert a vendor's unit to the canonical one (°F → °C, kPa → mmHg)."""
    if unit_code == MDC_DEGF and parameter == "temperature":
        return (value - 32.0) * 5.0 / 9.0
    if unit_code == MDC_KPA and parameter in {"systolic_bp", "diastolic_bp", "mean_bp", "etco2"}:
        return value * 7.50062
    return value
