"""Templates for valuation, financial-statement ratios, time value, corporate finance, fixed income."""

from __future__ import annotations

from quantgrid.data import calc
from quantgrid.data.templates import _TEXT, COMPANIES, Item, _p, _r, _rate, _years, formula, money, template

# ---------------------------------------------------------------- valuation


@template("pe_ratio", "valuation")
def _pe(rng):
    price = _r(rng, 8, 400)
    eps = max(0.05, round(price / rng.uniform(5, 60), 2))  # keep the multiple realistic (5x-60x)
    v = price / eps
    q = rng.choice([f"A stock trades at {money(price)} and its earnings per share are {money(eps)}. What is its P/E ratio?",
                    f"What is the price-to-earnings ratio of a share priced at {money(price)} with EPS of {money(eps)}?"])
    return Item(q, f"P/E = price / EPS = {price:.2f} / {eps:.2f}.", "The P/E ratio is {v}.", v, "x")


@template("eps", "valuation")
def _eps(rng):
    ni, shares, pref = _r(rng, 5, 900, 1), _r(rng, 2, 400, 1), rng.choice([0, 0, _r(rng, 1, 20, 1)])
    v = (ni - pref) / shares
    pref_txt = f" and pays {money(pref, 1)} million of preferred dividends" if pref else ""
    q = (f"A company earns net income of {money(ni, 1)} million{pref_txt}, with {shares:g} million common shares "
         f"outstanding. What is its basic EPS?")
    w = f"EPS = (net income - preferred dividends) / shares = ({ni:g} - {pref:g}) / {shares:g}."
    return Item(q, w, "Basic EPS is ${v}.", v, "$")


formula("dividend_yield", "valuation", "price div", lambda rng: (_r(rng, 10, 300), _r(rng, 0.1, 8)),
        lambda price, div: div / price * 100,
        ["A stock priced at {price:$} pays annual dividends of {div:$} per share. What is its dividend yield?",
         "What is the dividend yield of a share trading at {price:$} with a {div:$} annual dividend?"],
        "Dividend yield = dividend / price = {div:.2f} / {price:.2f}.", "The dividend yield is {v}%.", "%")


@template("ev_ebitda", "valuation")
def _ev_ebitda(rng):
    cap, debt = _r(rng, 100, 9000, 0), _r(rng, 0, 4000, 0)
    cash = round(min(cap, _r(rng, 10, 1500, 0)), 0)
    ev = cap + debt - cash
    ebitda = max(1.0, round(ev / rng.uniform(4, 25), 0))
    v = ev / ebitda
    q = (f"A company has a market capitalization of {money(cap, 0)} million, debt of {money(debt, 0)} million, "
         f"cash of {money(cash, 0)} million and EBITDA of {money(ebitda, 0)} million. What is its EV/EBITDA multiple?")
    w = f"EV = market cap + debt - cash = {cap:g} + {debt:g} - {cash:g} = {ev:g} million; EV/EBITDA = {ev:g} / {ebitda:g}."
    return Item(q, w, "EV/EBITDA is {v}.", v, "x")


@template("gordon_growth", "valuation")
def _gordon(rng):
    d0, g = _r(rng, 0.5, 6), _rate(rng, 0.01, 0.05)
    k = round(g + _rate(rng, 0.02, 0.08), 6)
    d1 = d0 * (1 + g)
    v = calc.gordon_growth(d1, k, g)
    q = (f"A stock just paid a dividend of {money(d0)}. Dividends grow at {_p(g)} a year forever and the required "
         f"return is {_p(k)}. What is the stock worth under the Gordon growth model?")
    w = f"D1 = {d0:.2f} x (1 + {g:g}) = {d1:.4f}; value = D1 / (k - g) = {d1:.4f} / ({k:g} - {g:g})."
    return Item(q, w, "The stock is worth ${v}.", v, "$")


@template("price_to_book", "valuation")
def _pb(rng):
    equity, shares = _r(rng, 50, 5000, 0), _r(rng, 10, 500, 0)
    bvps = equity / shares
    price = round(bvps * rng.uniform(0.4, 8), 2)
    v = price / bvps
    q = (f"A company has shareholders' equity of {money(equity, 0)} million and {shares:g} million shares; "
         f"the share price is {money(price)}. What is its price-to-book ratio?")
    return Item(q, f"Book value per share = {equity:g} / {shares:g} = {bvps:.4f}; P/B = {price:.2f} / {bvps:.4f}.",
                "The P/B ratio is {v}.", v, "x")


# ---------------------------------------------------------------- financial statement ratios


def _statement(rng) -> tuple[str, dict[str, float]]:
    name = rng.choice(COMPANIES)
    year = rng.randint(2015, 2024)
    rev = _r(rng, 200, 9000, 1)
    f = {"revenue": rev, "cogs": round(rev * rng.uniform(0.35, 0.8), 1)}
    f["operating_income"] = round((rev - f["cogs"]) * rng.uniform(0.2, 0.7), 1)
    f["net_income"] = round(f["operating_income"] * rng.uniform(0.4, 0.8), 1)
    f["total_assets"] = round(rev * rng.uniform(0.8, 3.0), 1)
    f["equity"] = round(f["total_assets"] * rng.uniform(0.25, 0.7), 1)
    f["current_assets"] = round(f["total_assets"] * rng.uniform(0.15, 0.5), 1)
    f["current_liabilities"] = round(f["current_assets"] * rng.uniform(0.4, 1.3), 1)
    f["debt"] = round(f["total_assets"] * rng.uniform(0.05, 0.45), 1)
    ctx = (f"{name}, fiscal {year} (USD millions): revenue {f['revenue']:,.1f}; cost of goods sold {f['cogs']:,.1f}; "
           f"operating income {f['operating_income']:,.1f}; net income {f['net_income']:,.1f}; total assets "
           f"{f['total_assets']:,.1f}; shareholders' equity {f['equity']:,.1f}; current assets "
           f"{f['current_assets']:,.1f}; current liabilities {f['current_liabilities']:,.1f}; total debt {f['debt']:,.1f}.")
    f["name"] = name  # type: ignore[assignment]
    return ctx, f


_RATIOS = {
    # name: (question, numerator, denominator, is_percent, final)
    "gross_margin": ("What is {name} gross margin?", "gross", "revenue", True, "The gross margin is {v}%."),
    "operating_margin": ("What is {name} operating margin?", "operating_income", "revenue", True,
                         "The operating margin is {v}%."),
    "net_margin": ("What is {name} net profit margin?", "net_income", "revenue", True, "The net margin is {v}%."),
    "roe": ("What is {name} return on equity?", "net_income", "equity", True, "ROE is {v}%."),
    "roa": ("What is {name} return on assets?", "net_income", "total_assets", True, "ROA is {v}%."),
    "current_ratio": ("What is {name} current ratio?", "current_assets", "current_liabilities", False,
                      "The current ratio is {v}."),
    "debt_to_equity": ("What is {name} debt-to-equity ratio?", "debt", "equity", False,
                       "Debt-to-equity is {v}."),
}


_RATIO_NAMES = {"gross_margin": "Gross margin", "operating_margin": "Operating margin", "net_margin": "Net margin",
                "roe": "ROE", "roa": "ROA", "current_ratio": "Current ratio", "debt_to_equity": "Debt-to-equity"}


def _ratio_template(key: str):
    question, num, den, is_pct, final = _RATIOS[key]

    def make(rng):
        ctx, f = _statement(rng)
        f["gross"] = round(f["revenue"] - f["cogs"], 1)
        v = f[num] / f[den] * (100 if is_pct else 1)
        label = {"gross": "gross profit (revenue - COGS)"}.get(num, num.replace("_", " "))
        w = f"{_RATIO_NAMES[key]} = {label} / {den.replace('_', ' ')} = {f[num]:,.1f} / {f[den]:,.1f}."
        # Half the items give the figures in the question, half in a context block.
        if rng.random() < 0.5:
            owner = f["name"] + ("'" if str(f["name"]).endswith("s") else "'s")
            return Item(question.format(name=owner), w, final, v, "%" if is_pct else "x", context=ctx)
        return Item(f"{ctx} {question.format(name='the company' + chr(39) + 's')}", w, final, v, "%" if is_pct else "x")
    return make


for _k in _RATIOS:
    template(_k, "ratios")(_ratio_template(_k))


# ---------------------------------------------------------------- time value of money


formula("simple_interest", "time_value", "p r t",
        lambda rng: (_r(rng, 500, 50000, 0), _rate(rng, 0.01, 0.12), rng.randint(1, 10)), calc.simple_interest,
        "How much simple interest does {p:$0} earn at {r:rate} a year over {t:years}?",
        "Interest = P x r x t = {p:g} x {r:g} x {t}.", "The interest is ${v}.", "$")


@template("compound_interest", "time_value")
def _compound(rng):
    p, r, t = _r(rng, 500, 50000, 0), _rate(rng, 0.01, 0.12), rng.randint(1, 30)
    m = rng.choice([1, 2, 4, 12])
    v = calc.compound_amount(p, r, t, m)
    freq = {1: "annually", 2: "semiannually", 4: "quarterly", 12: "monthly"}[m]
    q = f"What does {money(p, 0)} grow to in {_years(t)} at {_p(r)} a year compounded {freq}?"
    return Item(q, f"FV = P (1 + r/m)^(m t) = {p:g} x (1 + {r:g}/{m})^({m} x {t}).", "It grows to ${v}.", v, "$")


formula("continuous_compounding", "time_value", "p r t",
        lambda rng: (_r(rng, 500, 50000, 0), _rate(rng, 0.01, 0.1), rng.randint(1, 20)), calc.continuous_amount,
        "What is {p:$0} worth after {t:years} at {r:rate} compounded continuously?",
        "FV = P e^(r t) = {p:g} x e^({r:g} x {t}).", "It is worth ${v}.", "$")


formula("effective_annual_rate", "time_value", "r m", lambda rng: (_rate(rng, 0.01, 0.24), rng.choice([2, 4, 12, 365])),
        lambda r, m: calc.effective_annual_rate(r, m) * 100,
        "What is the effective annual rate of a {r:rate} nominal rate compounded {m} times a year?",
        "EAR = (1 + r/m)^m - 1 = (1 + {r:g}/{m})^{m} - 1.", "The EAR is {v}%.", "%", 3)


formula("real_rate", "time_value", "n i", lambda rng: (_rate(rng, 0.02, 0.12), _rate(rng, 0.0, 0.08)),
        lambda n, i: calc.real_rate(n, i) * 100,
        ["A bond returns {n:rate} nominal while inflation is {i:rate}. What is the exact real return (Fisher equation)?",
         "With a {n:rate} nominal rate and {i:rate} inflation, what is the real rate of return?"],
        "Real = (1 + nominal) / (1 + inflation) - 1 = (1 + {n:g}) / (1 + {i:g}) - 1.", "The real return is {v}%.",
        "%", 3)


@template("cagr", "time_value")
def _cagr(rng):
    begin, t = _r(rng, 100, 10000, 0), rng.randint(2, 15)
    end = round(begin * rng.uniform(0.6, 4.0), 0)
    v = calc.cagr(begin, end, t) * 100
    q = rng.choice([f"Revenue grew from {money(begin, 0)} million to {money(end, 0)} million over {t} years. What is the CAGR?",
                    f"An investment went from {money(begin, 0)} to {money(end, 0)} in {t} years. What was its compound annual growth rate?"])
    return Item(q, f"CAGR = (end / begin)^(1 / years) - 1 = ({end:g} / {begin:g})^(1/{t}) - 1.",
                "The CAGR is {v}%.", v, "%")


# Ordinary annuities: a payment at the end of each year.
formula("annuity_pv", "time_value", "pmt r n",
        lambda rng: (_r(rng, 100, 20000, 0), _rate(rng, 0.01, 0.12), rng.randint(3, 30)), calc.annuity_pv,
        "What is the present value of {pmt:$0} received at the end of each year for {n} years at a {r:rate} "
        "discount rate?",
        "PV = PMT x (1 - (1 + r)^-n) / r = {pmt:g} x (1 - (1 + {r:g})^-{n}) / {r:g}.", "The present value is ${v}.",
        "$")
formula("annuity_fv", "time_value", "pmt r n",
        lambda rng: (_r(rng, 100, 20000, 0), _rate(rng, 0.01, 0.12), rng.randint(3, 40)), calc.annuity_fv,
        "You save {pmt:$0} at the end of every year for {n} years at {r:rate}. How much will you have?",
        "FV = PMT x ((1 + r)^n - 1) / r = {pmt:g} x ((1 + {r:g})^{n} - 1) / {r:g}.", "You will have ${v}.", "$")


@template("loan_payment", "time_value")
def _loan(rng):
    p, r, t = _r(rng, 5000, 900000, -3), _rate(rng, 0.02, 0.1, 0.00125), rng.choice([3, 5, 10, 15, 20, 30])
    v = calc.loan_payment(p, r, t)
    q = f"What is the monthly payment on a {money(p, 0)} loan at {_p(r)} annual interest over {t} years?"
    return Item(q, f"Payment = P i / (1 - (1 + i)^-n) with i = {r:g}/12 and n = {t * 12}.",
                "The monthly payment is ${v}.", v, "$")


# ---------------------------------------------------------------- corporate finance


def _flows(rng) -> list[float]:
    c0 = -_r(rng, 1000, 100000, -2)
    n = rng.randint(3, 6)
    return [c0] + [round(-c0 * rng.uniform(0.15, 0.45), -1) for _ in range(n)]


def _flows_text(cfs: list[float]) -> str:
    return f"an initial outlay of {money(-cfs[0], 0)} followed by year-end cash flows of " + \
        ", ".join(money(c, 0) for c in cfs[1:])


@template("npv", "corporate_finance")
def _npv(rng):
    cfs, r = _flows(rng), _rate(rng, 0.04, 0.15)
    v = calc.npv(r, cfs)
    q = f"A project has {_flows_text(cfs)}. What is its NPV at a {_p(r)} discount rate?"
    return Item(q, f"NPV = sum of CF_t / (1 + {r:g})^t for t = 0..{len(cfs) - 1}.", "The NPV is ${v}.", v, "$")


@template("irr", "corporate_finance")
def _irr(rng):
    cfs = _flows(rng)
    while sum(cfs) <= 0:  # keep IRR positive and well defined
        cfs = _flows(rng)
    v = calc.irr(cfs) * 100
    q = f"What is the IRR of a project with {_flows_text(cfs)}?"
    lo, hi = round(v, 2) - 0.01, round(v, 2) + 0.01
    w = (f"Find r with NPV = 0: NPV at {lo:.2f}% is {calc.npv(lo / 100, cfs):,.2f} and at {hi:.2f}% is "
         f"{calc.npv(hi / 100, cfs):,.2f}, so the root lies between them.")
    return Item(q, w, "The IRR is {v}%.", v, "%")


@template("payback_period", "corporate_finance")
def _payback(rng):
    cfs = _flows(rng)
    while sum(cfs) <= 0:
        cfs = _flows(rng)
    v = calc.payback_period(-cfs[0], cfs[1:])
    q = f"A project has {_flows_text(cfs)}. What is its payback period?"
    cum, parts = 0.0, []
    for c in cfs[1:]:
        cum += c
        parts.append(f"{cum:,.0f}")
        if cum >= -cfs[0]:
            break
    w = f"Cumulative inflows: {', '.join(parts)} against an outlay of {-cfs[0]:,.0f}; interpolate within the last year."
    return Item(q, w, "The payback period is {v} years.", v, "years")


@template("wacc", "corporate_finance")
def _wacc(rng):
    e, d = _r(rng, 100, 5000, 0), _r(rng, 50, 4000, 0)
    ke, kd, tax = _rate(rng, 0.07, 0.15), _rate(rng, 0.02, 0.08), _rate(rng, 0.15, 0.35, 0.01)
    v = calc.wacc(e, d, ke, kd, tax) * 100
    q = (f"A firm has {money(e, 0)} million of equity costing {_p(ke)} and {money(d, 0)} million of debt costing "
         f"{_p(kd)} before tax; its tax rate is {_p(tax)}. What is its WACC?")
    w = f"WACC = E/V x Re + D/V x Rd x (1 - t) with V = {e + d:g}."
    return Item(q, w, "The WACC is {v}%.", v, "%")


@template("breakeven", "corporate_finance")
def _breakeven(rng):
    fixed, price = _r(rng, 10000, 900000, -2), _r(rng, 10, 500)
    var = round(price * rng.uniform(0.2, 0.8), 2)
    v = calc.breakeven_units(fixed, price, var)
    q = (f"A product sells for {money(price)} with variable cost of {money(var)} per unit and fixed costs of "
         f"{money(fixed, 0)}. How many units must be sold to break even?")
    return Item(q, f"Break-even units = fixed costs / (price - variable cost) = {fixed:g} / ({price:.2f} - {var:.2f}).",
                "Break-even is {v} units.", v, "units", 1)


# ---------------------------------------------------------------- fixed income


def _bond_inputs(rng):
    face = rng.choice([100, 1000])
    c, y = _rate(rng, 0.0, 0.09, 0.005), _rate(rng, 0.01, 0.1)
    return face, c, y, rng.randint(1, 30), rng.choice([1, 2])


def _freq(f: int) -> str:
    return "annual" if f == 1 else "semiannual"


def _paid(f: int) -> str:
    return "annually" if f == 1 else "semiannually"


@template("bond_price", "fixed_income")
def _bond_price(rng):
    face, c, y, t, f = _bond_inputs(rng)
    v = calc.bond_price(face, c, y, t, f)
    q = (f"What is the price of a {t}-year bond with face value {money(face, 0)}, a {_p(c)} coupon paid "
         f"{_paid(f)} and a yield to maturity of {_p(y)}?")
    cpn, n = face * c / f, t * f
    w = (f"Coupon = {cpn:g} per period for {n} periods at {y / f:g} per period: price = {cpn:g} x "
         f"{calc.annuity_pv(1, y / f, n):.4f} + {face} / {(1 + y / f) ** n:.4f}.")
    return Item(q, w, "The price is ${v}.", v, "$")


@template("bond_ytm", "fixed_income")
def _bond_ytm(rng):
    face, c, _, t, f = _bond_inputs(rng)
    price = round(face * rng.uniform(0.8, 1.2), 2)
    v = calc.bond_ytm(price, face, c, t, f) * 100
    q = (f"A {t}-year bond with face value {money(face, 0)} and a {_p(c)} {_freq(f)} coupon trades at "
         f"{money(price)}. What is its yield to maturity?")
    w = (f"Solve {price:.2f} = sum of {face * c / f:g} / (1 + y/{f})^k + {face} / (1 + y/{f})^{t * f} for y; "
         f"the current yield {face * c / price * 100:.3f}% is a first guess.")
    return Item(q, w, "The YTM is {v}%.", v, "%", 3)


_DURATIONS = {
    # An annual-pay bond's duration. name: (value, question, working, final, unit); the working
    # may name the bond's price, its Macaulay duration (mac) and mac x price (weighted).
    "macaulay_duration": (calc.macaulay_duration,
                          "What is the Macaulay duration of a {t}-year annual-pay bond with a {c:rate} coupon at a "
                          "{y:rate} yield?",
                          "Price per {face} face = {price:.4f}; duration = sum of t x PV(CF_t) / price = "
                          "{weighted:.4f} / {price:.4f}.", "The Macaulay duration is {v} years.", "years"),
    "modified_duration": (calc.modified_duration,
                          "What is the modified duration of a {t}-year annual-pay bond with a {c:rate} coupon "
                          "yielding {y:rate}?",
                          "Macaulay duration = {mac:.4f}; modified = {mac:.4f} / (1 + {y:g}).",
                          "The modified duration is {v}.", ""),
}


def _duration_template(key: str):
    value, question, working, final, unit = _DURATIONS[key]

    def make(rng):
        face, c, y, t, _ = _bond_inputs(rng)
        c = c or 0.04
        price, mac = calc.bond_price(face, c, y, t, 1), calc.macaulay_duration(face, c, y, t, 1)
        w = working.format(face=face, y=y, price=price, mac=mac, weighted=mac * price)
        return Item(_TEXT.format(question, t=t, c=c, y=y), w, final, value(face, c, y, t, 1), unit, 3)
    return make


for _k in _DURATIONS:
    template(_k, "fixed_income")(_duration_template(_k))


@template("duration_price_change", "fixed_income")
def _dur_change(rng):
    dmod, dy = _r(rng, 1, 15), rng.choice([-1, 1]) * _rate(rng, 0.0025, 0.02)
    v = -dmod * dy * 100
    q = (f"A bond has a modified duration of {dmod:.2f}. By roughly what percentage does its price change if "
         f"yields {'rise' if dy > 0 else 'fall'} by {abs(dy) * 10000:g} basis points?")
    return Item(q, f"%change = -D_mod x change in yield = -{dmod:.2f} x {dy:g} = {v:.4f}%.",
                "The price changes by about {v}%.", v, "%")


@template("current_yield", "fixed_income")
def _cur_yield(rng):
    face, c, _, _, _ = _bond_inputs(rng)
    c = c or 0.03
    price = round(face * rng.uniform(0.75, 1.25), 2)
    v = calc.current_yield(face, c, price) * 100
    q = f"A bond with face value {money(face, 0)} and a {_p(c)} coupon trades at {money(price)}. What is its current yield?"
    return Item(q, f"Current yield = annual coupon / price = {face * c:g} / {price:.2f}.", "The current yield is {v}%.",
                v, "%", 3)


formula("zero_coupon", "fixed_income", "face y t",
        lambda rng: (rng.choice([100, 1000, 10000]), _rate(rng, 0.005, 0.09), rng.randint(1, 30)),
        calc.zero_coupon_price,
        "What is the price of a zero-coupon bond paying {face:$0} in {t:years} at a {y:rate} annual yield?",
        "Price = face / (1 + y)^t = {face} / (1 + {y:g})^{t}.", "The price is ${v}.", "$")
