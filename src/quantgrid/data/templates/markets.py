"""Templates for risk, portfolio, options and trading."""

from __future__ import annotations

import math

from quantgrid.data import calc
from quantgrid.data.templates import _TEXT, Item, _p, _r, _rate, _returns, _rl, _years, money, template

# ---------------------------------------------------------------- risk


@template("volatility", "risk")
def _vol(rng):
    rets = _returns(rng, rng.randint(5, 8), -0.03, 0.03)
    v = calc.annualized_volatility(rets, 252) * 100
    q = rng.choice([f"Daily returns were {_rl(rets)}. What is the annualized volatility (252 trading days)?",
                    f"Annualize the volatility of these daily returns: {_rl(rets)}."])
    sd = calc.stdev(rets)
    w = f"Mean = {calc.mean(rets) * 100:.3f}%; sample standard deviation = {sd * 100:.3f}% a day; x sqrt(252) = {sd * 100:.3f} x 15.875."
    return Item(q, w, "The annualized volatility is {v}%.", v, "%")


@template("sharpe", "risk")
def _sharpe(rng):
    ret, rf, vol = _rate(rng, 0.02, 0.25), _rate(rng, 0.0, 0.05), _rate(rng, 0.05, 0.4)
    v = calc.sharpe(ret, rf, vol)
    q = rng.choice([f"A fund returned {_p(ret)} with {_p(vol)} volatility while the risk-free rate was {_p(rf)}. What is its Sharpe ratio?",
                    f"What is the Sharpe ratio of a portfolio with expected return {_p(ret)}, standard deviation {_p(vol)} and a {_p(rf)} risk-free rate?"])
    return Item(q, f"Sharpe = (return - risk-free) / volatility = ({ret:g} - {rf:g}) / {vol:g}.",
                "The Sharpe ratio is {v}.", v, "", 3)


@template("sortino", "risk")
def _sortino(rng):
    rets = _returns(rng, rng.randint(5, 8), -0.04, 0.06)
    while not any(r < 0 for r in rets) or calc.mean(rets) <= 0:
        rets = _returns(rng, len(rets), -0.04, 0.06)
    v = calc.sortino(rets, 0.0)
    q = rng.choice([f"Monthly returns were {_rl(rets)}. What is the Sortino ratio (0% target, downside deviation over all periods)?",
                    f"Compute the Sortino ratio of monthly returns {_rl(rets)} with a 0% target."])
    m = calc.mean(rets)
    dd = m / v
    w = f"Mean return = {m * 100:.3f}%; downside deviation = sqrt(mean of min(0, r)^2) = {dd * 100:.3f}%; Sortino = {m * 100:.3f} / {dd * 100:.3f}."
    return Item(q, w, "The Sortino ratio is {v}.", v, "", 3)


@template("beta", "risk")
def _beta(rng):
    n = rng.randint(4, 6)
    market = _returns(rng, n, -0.05, 0.05)
    b = rng.uniform(0.4, 1.8)
    asset = [round(b * m + rng.uniform(-0.01, 0.01), 3) for m in market]
    v = calc.beta(asset, market)
    q = f"A stock's returns were {_rl(asset)} while the market returned {_rl(market)}. What is the stock's beta?"
    ma, mm = calc.mean(asset), calc.mean(market)
    cov = sum((a - ma) * (m - mm) for a, m in zip(asset, market, strict=True)) / (n - 1)
    w = f"Beta = covariance(stock, market) / variance(market) = {cov * 1e4:.4f} / {calc.stdev(market) ** 2 * 1e4:.4f} (in %^2)."
    return Item(q, w, "The beta is {v}.", v, "", 3)


@template("parametric_var", "risk")
def _var(rng):
    value, sigma = _r(rng, 10000, 5000000, -3), _rate(rng, 0.005, 0.04, 0.001)
    conf, h = rng.choice([0.95, 0.99]), rng.choice([1, 1, 5, 10])
    v = calc.parametric_var(value, sigma, calc.Z_SCORES[conf], h)
    q = rng.choice([f"A {money(value, 0)} portfolio has daily volatility of {_p(sigma)}. What is its {h}-day {conf:.0%} "
                    f"parametric VaR, assuming normal returns with zero mean?",
                    f"Estimate the {conf:.0%} {h}-day value at risk of {money(value, 0)} held in an asset with {_p(sigma)} "
                    f"daily volatility (normal, zero mean)."])
    z = calc.Z_SCORES[conf]
    w = f"VaR = value x z x sigma x sqrt(h) = {value:,.0f} x {z:.4f} x {sigma:g} x sqrt({h}) = {value * sigma:,.2f} x {z * h ** 0.5:.4f}."
    return Item(q, w, "The VaR is ${v}.", v, "$")


@template("max_drawdown", "risk")
def _mdd(rng):
    prices = [round(rng.uniform(50, 150), 2)]
    for _ in range(rng.randint(5, 8)):
        prices.append(round(prices[-1] * rng.uniform(0.85, 1.15), 2))
    v = calc.max_drawdown(prices) * 100
    q = rng.choice([f"A stock closed at {', '.join(f'{p:.2f}' for p in prices)} on consecutive days. What was its maximum drawdown?",
                    f"What is the maximum drawdown of the price path {', '.join(f'{p:.2f}' for p in prices)}?"])
    peak, best = prices[0], (prices[0], prices[0])
    for p in prices:
        if p > peak:
            peak = p
        elif p / peak < best[1] / best[0]:
            best = (peak, p)
    w = f"Largest fall from a running peak: from {best[0]:.2f} to {best[1]:.2f}, ({best[1]:.2f} - {best[0]:.2f}) / {best[0]:.2f}."
    return Item(q, w, "The maximum drawdown is {v}%.", v, "%")


# ---------------------------------------------------------------- portfolio


@template("portfolio_return", "portfolio")
def _port_ret(rng):
    n = rng.randint(2, 4)
    raw = [rng.randint(1, 9) for _ in range(n)]
    weights = [round(x / sum(raw), 2) for x in raw]
    weights[-1] = round(1 - sum(weights[:-1]), 2)
    rets = [_rate(rng, -0.1, 0.25, 0.005) for _ in range(n)]
    v = calc.portfolio_return(weights, rets) * 100
    parts = ", ".join(f"{w * 100:g}% in an asset returning {_p(r)}" for w, r in zip(weights, rets, strict=True))
    w = "Portfolio return = sum of weight x return = " + " + ".join(f"{a:g} x {b:g}" for a, b in zip(weights, rets, strict=True)) + "."
    return Item(f"A portfolio holds {parts}. What is the portfolio return?", w, "The portfolio return is {v}%.", v, "%")


@template("two_asset_volatility", "portfolio")
def _two_vol(rng):
    w1, s1, s2 = _rate(rng, 0.1, 0.9, 0.05), _rate(rng, 0.05, 0.4, 0.01), _rate(rng, 0.05, 0.4, 0.01)
    rho = round(rng.uniform(-0.8, 0.9), 1)
    v = calc.two_asset_volatility(w1, s1, s2, rho) * 100
    q = (f"A portfolio puts {_p(w1)} in asset A (volatility {_p(s1)}) and the rest in asset B (volatility {_p(s2)}); "
         f"their correlation is {rho:g}. What is the portfolio volatility?")
    w2 = round(1 - w1, 4)
    var = (v / 100) ** 2
    w = (f"sigma_p = sqrt({w1:g}^2 x {s1:g}^2 + {w2:g}^2 x {s2:g}^2 + 2 x {w1:g} x {w2:g} x {rho:g} x {s1:g} x {s2:g}) "
         f"= sqrt({var:.6f}).")
    return Item(q, w, "The portfolio volatility is {v}%.", v, "%")


@template("capm", "portfolio")
def _capm(rng):
    rf, b, rm = _rate(rng, 0.0, 0.05), _r(rng, 0.3, 2.0), _rate(rng, 0.05, 0.12)
    v = calc.capm(rf, b, rm) * 100
    q = f"Under CAPM, what is the expected return of a stock with beta {b:.2f} if the risk-free rate is {_p(rf)} and the market returns {_p(rm)}?"
    return Item(q, f"E[R] = rf + beta x (Rm - rf) = {rf:g} + {b:.2f} x ({rm:g} - {rf:g}).",
                "The expected return is {v}%.", v, "%")


@template("treynor", "portfolio")
def _treynor(rng):
    ret, rf, b = _rate(rng, 0.03, 0.25), _rate(rng, 0.0, 0.04), _r(rng, 0.5, 1.8)
    v = calc.treynor(ret, rf, b) * 100
    q = f"A portfolio returned {_p(ret)} with a beta of {b:.2f}; the risk-free rate is {_p(rf)}. What is its Treynor ratio (in percent)?"
    return Item(q, f"Treynor = (return - rf) / beta = ({ret:g} - {rf:g}) / {b:.2f}.", "The Treynor ratio is {v}%.",
                v, "%")


# ---------------------------------------------------------------- options


@template("option_payoff", "options")
def _payoff(rng):
    k, s = _r(rng, 20, 300, 0), 0.0
    s = round(k * rng.uniform(0.7, 1.3), 2)
    kind, contracts = rng.choice(["call", "put"]), rng.randint(1, 10)
    per = calc.call_payoff(s, k) if kind == "call" else calc.put_payoff(s, k)
    v = per * 100 * contracts
    q = (f"You hold {contracts} {kind} contract{'s' if contracts > 1 else ''} (100 shares each) with strike "
         f"{money(k)}. The stock is at {money(s)} at expiry. What is the total payoff?")
    rule = "max(S - K, 0)" if kind == "call" else "max(K - S, 0)"
    return Item(q, f"Payoff per share = {rule} = {per:.2f}; total = {per:.2f} x 100 x {contracts}.",
                "The payoff is ${v}.", v, "$")


@template("straddle_payoff", "options")
def _straddle(rng):
    k = _r(rng, 20, 300, 0)
    call, put = _r(rng, 1, k * 0.1), _r(rng, 1, k * 0.1)
    s = round(k * rng.uniform(0.7, 1.3), 2)
    v = calc.call_payoff(s, k) + calc.put_payoff(s, k) - call - put
    q = (f"A long straddle buys a call for {money(call)} and a put for {money(put)}, both struck at {money(k)}. "
         f"What is the profit per share if the stock ends at {money(s)}?")
    return Item(q, "Profit = |S - K| - (call premium + put premium).", "The profit is ${v} per share.", v, "$")


def _d1d2(s, k, t, r, vol):
    d1 = (math.log(s / k) + (r + vol**2 / 2) * t) / (vol * math.sqrt(t))
    return d1, d1 - vol * math.sqrt(t)


def _bs_inputs(rng):
    s = _r(rng, 20, 300)
    return s, round(s * rng.uniform(0.8, 1.2), 0), rng.choice([0.25, 0.5, 1.0, 2.0]), _rate(rng, 0.0, 0.06), \
        _rate(rng, 0.1, 0.6, 0.01)


_BLACK_SCHOLES = {
    # A European option priced by Black-Scholes (no dividends). kind: (question, working, final); the
    # texts may name the inputs, d1, d2, N(d1) and N(d2) (n_d1, n_d2), N(-d1), N(-d2) (n_md1, n_md2)
    # and the discounted strike K e^(-rT) (k_disc).
    "call": ("Price a European call with spot {s:$}, strike {k:$}, {t:years} to expiry, a {r:rate} risk-free rate "
             "and {vol:rate} volatility (Black-Scholes, no dividends).",
             "d1 = (ln({s:.2f}/{k:g}) + ({r:g} + {vol:g}^2/2) x {t:g}) / ({vol:g} x sqrt({t:g})) = {d1:.4f}; "
             "d2 = {d2:.4f}; C = {s:.2f} x N({d1:.4f}) - {k:g} x e^(-{r:g} x {t:g}) x N({d2:.4f}) = {s:.2f} x "
             "{n_d1:.4f} - {k_disc:.4f} x {n_d2:.4f}.", "The call is worth ${v}."),
    "put": ("What is the Black-Scholes price of a European put with spot {s:$}, strike {k:$}, {t:years} to "
            "expiry, rate {r:rate} and volatility {vol:rate}?",
            "d1 = {d1:.4f}, d2 = {d2:.4f}; P = K e^(-rT) N(-d2) - S N(-d1) = {k_disc:.4f} x {n_md2:.4f} - {s:.2f} x "
            "{n_md1:.4f}.", "The put is worth ${v}."),
}


def _black_scholes_template(kind: str):
    question, working, final = _BLACK_SCHOLES[kind]

    def make(rng):
        s, k, t, r, vol = _bs_inputs(rng)
        d1, d2 = _d1d2(s, k, t, r, vol)
        x = dict(s=s, k=k, t=t, r=r, vol=vol, d1=d1, d2=d2, n_d1=calc.norm_cdf(d1), n_d2=calc.norm_cdf(d2),
                 n_md1=calc.norm_cdf(-d1), n_md2=calc.norm_cdf(-d2), k_disc=k * math.exp(-r * t))
        v = calc.black_scholes(s, k, t, r, vol, kind)
        return Item(_TEXT.format(question, **x), _TEXT.format(working, **x), final, v, "$")
    return make


for _kind in _BLACK_SCHOLES:
    template(f"black_scholes_{_kind}", "options")(_black_scholes_template(_kind))


@template("put_call_parity", "options")
def _parity(rng):
    s, k, t, r, vol = _bs_inputs(rng)
    c = round(calc.black_scholes(s, k, t, r, vol, "call"), 2)
    v = calc.put_from_parity(c, s, k, r, t)
    q = (f"A European call with strike {money(k)} and {_years(t)} to expiry costs {money(c)}; the stock is at "
         f"{money(s)} and the continuously compounded rate is {_p(r)}. What should the matching put cost by put-call parity?")
    return Item(q, f"P = C - S + K e^(-rT) = {c:.2f} - {s:.2f} + {k:g} x e^(-{r:g} x {t:g}) = {c - s:.2f} + "
                f"{k * math.exp(-r * t):.4f}.", "The put should cost ${v}.", v, "$")


@template("forward_price", "options")
def _forward(rng):
    s, r, t, q_ = _r(rng, 20, 500), _rate(rng, 0.0, 0.07), rng.choice([0.25, 0.5, 1.0, 2.0]), _rate(rng, 0.0, 0.04)
    v = calc.forward_price(s, r, t, q_)
    q = (f"What is the forward price of a stock at {money(s)} for delivery in {_years(t)} if the continuously "
         f"compounded rate is {_p(r)} and the dividend yield is {_p(q_)}?")
    return Item(q, f"F = S e^((r - q) T) = {s:.2f} x e^(({r:g} - {q_:g}) x {t:g}).", "The forward price is ${v}.", v, "$")


# ---------------------------------------------------------------- trading


@template("position_size", "trading")
def _position(rng):
    account, risk = _r(rng, 5000, 500000, -2), rng.choice([0.005, 0.01, 0.015, 0.02])
    entry = _r(rng, 10, 400)
    stop = round(entry * (1 - rng.uniform(0.02, 0.12)), 2)
    v = float(calc.position_size(account, risk, entry, stop))
    q = (f"With a {money(account, 0)} account you risk {_p(risk)} per trade. You buy at {money(entry)} with a stop at "
         f"{money(stop)}. How many shares can you buy?")
    return Item(q, f"Shares = account x risk / (entry - stop) = {account:g} x {risk:g} / {entry - stop:.2f}, rounded down.",
                "You can buy {v} shares.", v, "shares", 0)


@template("pct_change", "trading")
def _pct(rng):
    old = _r(rng, 5, 500)
    new = round(old * rng.uniform(0.7, 1.4), 2)
    v = calc.pct_change(old, new) * 100
    q = rng.choice([f"A stock moved from {money(old)} to {money(new)}. What is the percentage change?",
                    f"What is the percent change from a price of {money(old)} to {money(new)}?"])
    return Item(q, f"Change = (new - old) / old = ({new:.2f} - {old:.2f}) / {old:.2f}.", "The change is {v}%.", v, "%")


@template("kelly", "trading")
def _kelly(rng):
    p, b = _rate(rng, 0.35, 0.7, 0.01), _r(rng, 0.8, 3.0, 2)
    while calc.kelly_fraction(p, b) <= 0:  # a negative Kelly bet means "don't trade": not a useful question
        p, b = _rate(rng, 0.35, 0.7, 0.01), _r(rng, 0.8, 3.0, 2)
    v = calc.kelly_fraction(p, b) * 100
    q = rng.choice([f"A strategy wins {_p(p)} of the time and its average win is {b:g} times its average loss. What fraction of capital does the Kelly criterion bet?",
                    f"What Kelly fraction fits a trade with win probability {_p(p)} and a win/loss ratio of {b:g}?"])
    return Item(q, f"Kelly f = p - (1 - p) / b = {p:g} - {1 - p:g} / {b:g}.", "Kelly bets {v}% of capital.", v, "%")
