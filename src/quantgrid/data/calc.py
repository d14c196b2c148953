"""The finance formulas behind the computed-answer questions. Pure functions, no I/O.

Rates are decimals (0.05 = 5%). Cash-flow lists start at t = 0. Every function here is
checked in tests against independently written formulas and textbook values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def pct_change(old: float, new: float) -> float:
    return (new - old) / old


def cagr(begin: float, end: float, years: float) -> float:
    return (end / begin) ** (1 / years) - 1


def simple_interest(principal: float, rate: float, years: float) -> float:
    return principal * rate * years


def compound_amount(principal: float, rate: float, years: float, periods_per_year: int = 1) -> float:
    return principal * (1 + rate / periods_per_year) ** (periods_per_year * years)


def continuous_amount(principal: float, rate: float, years: float) -> float:
    return principal * math.exp(rate * years)


def effective_annual_rate(nominal: float, periods_per_year: int) -> float:
    return (1 + nominal / periods_per_year) ** periods_per_year - 1


def real_rate(nominal: float, inflation: float) -> float:
    """Fisher: (1 + nominal) = (1 + real)(1 + inflation)."""
    return (1 + nominal) / (1 + inflation) - 1


def npv(rate: float, cashflows: Sequence[float]) -> float:
    return sum(cf / (1 + rate) ** t for t, cf in enumerate(cashflows))


def _bisect(f: Callable[[float], float], lo: float, hi: float, tol: float = 1e-12) -> float:
    flo = f(lo)
    if flo * f(hi) > 0:
        raise ValueError("no sign change in the bracket")
    for _ in range(200):
        mid = (lo + hi) / 2
        fm = f(mid)
        if abs(fm) < tol or hi - lo < tol:
            return mid
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return (lo + hi) / 2


def irr(cashflows: Sequence[float]) -> float:
    """The rate where NPV = 0 (conventional flows: one sign change)."""
    hi = 1.0
    while npv(hi, cashflows) * npv(-0.99, cashflows) > 0 and hi < 1e6:
        hi *= 4  # widen the bracket for very profitable projects
    return _bisect(lambda r: npv(r, cashflows), -0.99, hi)


def payback_period(initial: float, inflows: Sequence[float]) -> float:
    """Years until cumulative inflows repay ``initial``, interpolating within the year."""
    remaining = initial
    for year, cf in enumerate(inflows, start=1):
        if cf >= remaining:
            return year - 1 + remaining / cf
        remaining -= cf
    return math.inf


def annuity_pv(payment: float, rate: float, n: int) -> float:
    return payment * (1 - (1 + rate) ** -n) / rate


def annuity_fv(payment: float, rate: float, n: int) -> float:
    return payment * ((1 + rate) ** n - 1) / rate


def loan_payment(principal: float, annual_rate: float, years: int, periods_per_year: int = 12) -> float:
    r, n = annual_rate / periods_per_year, years * periods_per_year
    return principal * r / (1 - (1 + r) ** -n)


# ---------------------------------------------------------------- bonds


def _bond_flows(face: float, coupon_rate: float, years: float, freq: int) -> list[tuple[float, float]]:
    n = round(years * freq)
    c = face * coupon_rate / freq
    return [(k / freq, c + (face if k == n else 0.0)) for k in range(1, n + 1)]


def bond_price(face: float, coupon_rate: float, ytm: float, years: float, freq: int = 1) -> float:
    y = ytm / freq
    return sum(cf / (1 + y) ** (t * freq) for t, cf in _bond_flows(face, coupon_rate, years, freq))


def bond_ytm(price: float, face: float, coupon_rate: float, years: float, freq: int = 1) -> float:
    return _bisect(lambda y: bond_price(face, coupon_rate, y, years, freq) - price, -0.5, 2.0)


def macaulay_duration(face: float, coupon_rate: float, ytm: float, years: float, freq: int = 1) -> float:
    y = ytm / freq
    flows = _bond_flows(face, coupon_rate, years, freq)
    pv = [cf / (1 + y) ** (t * freq) for t, cf in flows]
    return sum(t * v for (t, _), v in zip(flows, pv, strict=True)) / sum(pv)


def modified_duration(face: float, coupon_rate: float, ytm: float, years: float, freq: int = 1) -> float:
    return macaulay_duration(face, coupon_rate, ytm, years, freq) / (1 + ytm / freq)


def current_yield(face: float, coupon_rate: float, price: float) -> float:
    return face * coupon_rate / price


def zero_coupon_price(face: float, ytm: float, years: float) -> float:
    return face / (1 + ytm) ** years


# ---------------------------------------------------------------- statistics and risk


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (n - 1)."""
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def annualized_volatility(returns: Sequence[float], periods_per_year: int = 252) -> float:
    return stdev(returns) * math.sqrt(periods_per_year)


def sharpe(expected_return: float, risk_free: float, volatility: float) -> float:
    return (expected_return - risk_free) / volatility


def sortino(returns: Sequence[float], target: float = 0.0) -> float:
    """Mean excess return over the downside deviation (root mean square of shortfalls, over all periods)."""
    downside = math.sqrt(sum(min(0.0, r - target) ** 2 for r in returns) / len(returns))
    return (mean(returns) - target) / downside


def beta(asset: Sequence[float], market: Sequence[float]) -> float:
    ma, mm = mean(asset), mean(market)
    cov = sum((a - ma) * (m - mm) for a, m in zip(asset, market, strict=True))
    var = sum((m - mm) ** 2 for m in market)
    return cov / var


def capm(risk_free: float, beta_: float, market_return: float) -> float:
    return risk_free + beta_ * (market_return - risk_free)


def treynor(portfolio_return: float, risk_free: float, beta_: float) -> float:
    return (portfolio_return - risk_free) / beta_


def parametric_var(value: float, volatility_daily: float, z: float, horizon_days: int = 1) -> float:
    """Zero-mean normal VaR: value * z * sigma * sqrt(h)."""
    return value * z * volatility_daily * math.sqrt(horizon_days)


Z_SCORES = {0.90: 1.2815515655446004, 0.95: 1.6448536269514722, 0.99: 2.3263478740408408}


def max_drawdown(prices: Sequence[float]) -> float:
    peak, worst = prices[0], 0.0
    for p in prices:
        peak = max(peak, p)
        worst = min(worst, p / peak - 1)
    return -worst


def portfolio_return(weights: Sequence[float], returns: Sequence[float]) -> float:
    return sum(w * r for w, r in zip(weights, returns, strict=True))


def two_asset_volatility(w1: float, s1: float, s2: float, corr: float) -> float:
    w2 = 1 - w1
    return math.sqrt(w1**2 * s1**2 + w2**2 * s2**2 + 2 * w1 * w2 * corr * s1 * s2)


def position_size(account: float, risk_fraction: float, entry: float, stop: float) -> int:
    """Shares to buy so hitting the stop loses ``risk_fraction`` of the account (rounded down)."""
    return math.floor(account * risk_fraction / abs(entry - stop) + 1e-9)


def kelly_fraction(win_prob: float, win_loss_ratio: float) -> float:
    return win_prob - (1 - win_prob) / win_loss_ratio


# ---------------------------------------------------------------- corporate finance


def wacc(equity: float, debt: float, cost_equity: float, cost_debt: float, tax_rate: float) -> float:
    v = equity + debt
    return equity / v * cost_equity + debt / v * cost_debt * (1 - tax_rate)


def gordon_growth(next_dividend: float, required: float, growth: float) -> float:
    return next_dividend / (required - growth)


def breakeven_units(fixed_costs: float, price: float, variable_cost: float) -> float:
    return fixed_costs / (price - variable_cost)


# ---------------------------------------------------------------- options


def norm_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def black_scholes(spot: float, strike: float, years: float, rate: float, vol: float, kind: str = "call") -> float:
    d1 = (math.log(spot / strike) + (rate + vol**2 / 2) * years) / (vol * math.sqrt(years))
    d2 = d1 - vol * math.sqrt(years)
    if kind == "call":
        return spot * norm_cdf(d1) - strike * math.exp(-rate * years) * norm_cdf(d2)
    return strike * math.exp(-rate * years) * norm_cdf(-d2) - spot * norm_cdf(-d1)


def call_payoff(spot: float, strike: float) -> float:
    return max(spot - strike, 0.0)


def put_payoff(spot: float, strike: float) -> float:
    return max(strike - spot, 0.0)


def put_from_parity(call: float, spot: float, strike: float, rate: float, years: float) -> float:
    """C - P = S - K e^{-rT}."""
    return call - spot + strike * math.exp(-rate * years)


def forward_price(spot: float, rate: float, years: float, dividend_yield: float = 0.0) -> float:
    return spot * math.exp((rate - dividend_yield) * years)
