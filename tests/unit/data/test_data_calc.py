"""The finance formulas, against textbook values and independently written formulas.

The independent versions below use other routes to the same number (closed forms
instead of sums, numpy instead of loops, parity instead of the put formula), so a
shared mistake is unlikely.
"""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
import pytest

from quantgrid.data import calc

approx = pytest.approx


# ---------------------------------------------------------------- textbook values


def test_bond_at_par_when_coupon_equals_yield():
    # A 10-year 5% coupon bond at a 5% yield prices at par, annual or semiannual.
    assert calc.bond_price(1000, 0.05, 0.05, 10) == approx(1000, abs=1e-9)
    assert calc.bond_price(1000, 0.05, 0.05, 10, freq=2) == approx(1000, abs=1e-9)
    assert calc.bond_ytm(1000, 1000, 0.05, 10) == approx(0.05, abs=1e-9)


def test_bond_premium_and_discount_textbook():
    # 3-year 10% annual bond at 8%: 100/1.08 + 100/1.08^2 + 1100/1.08^3 = 1051.54
    assert calc.bond_price(1000, 0.10, 0.08, 3) == approx(1051.54, abs=0.005)
    # 10-year 8% semiannual bond at 10%: 40 x 12.4622 + 1000 x 0.37689 = 875.38
    assert calc.bond_price(1000, 0.08, 0.10, 10, freq=2) == approx(875.38, abs=0.005)


def test_npv_and_irr_known_cases():
    assert calc.npv(0.10, [-100, 50, 60]) == approx(-100 + 50 / 1.1 + 60 / 1.21)
    assert calc.npv(0.10, [-100, 50, 60]) == approx(-4.9587, abs=1e-4)
    assert calc.irr([-100, 110]) == approx(0.10, abs=1e-10)
    assert calc.irr([-100, 0, 121]) == approx(0.10, abs=1e-10)
    # -1000 then 500, 400, 300, 100: IRR 14.49% (a standard textbook example)
    assert calc.irr([-1000, 500, 400, 300, 100]) == approx(0.1449, abs=5e-5)


def test_black_scholes_textbook():
    # Hull: S=100, K=100, T=1, r=5%, sigma=20%: call 10.4506, put 5.5735
    assert calc.black_scholes(100, 100, 1, 0.05, 0.2, "call") == approx(10.4506, abs=1e-4)
    assert calc.black_scholes(100, 100, 1, 0.05, 0.2, "put") == approx(5.5735, abs=1e-4)
    # Hull example 15.6: S=42, K=40, T=0.5, r=10%, sigma=20%: call 4.76, put 0.81
    assert calc.black_scholes(42, 40, 0.5, 0.10, 0.2, "call") == approx(4.76, abs=0.005)
    assert calc.black_scholes(42, 40, 0.5, 0.10, 0.2, "put") == approx(0.81, abs=0.005)


def test_duration_textbook():
    # 3-year 10% annual coupon at 10%: Macaulay 2.7355, modified 2.4869
    assert calc.macaulay_duration(1000, 0.10, 0.10, 3) == approx(2.7355, abs=1e-4)
    assert calc.modified_duration(1000, 0.10, 0.10, 3) == approx(2.4869, abs=1e-4)
    # A zero-coupon bond's duration is its maturity.
    assert calc.macaulay_duration(1000, 0.0, 0.07, 12) == approx(12)


def test_time_value_textbook():
    assert calc.loan_payment(200_000, 0.06, 30) == approx(1199.10, abs=0.005)
    assert calc.annuity_pv(100, 0.05, 10) == approx(772.17, abs=0.005)
    assert calc.annuity_fv(100, 0.05, 10) == approx(1257.79, abs=0.005)
    assert calc.effective_annual_rate(0.12, 12) == approx(0.126825, abs=1e-6)
    assert calc.continuous_amount(100, 0.05, 1) == approx(105.1271, abs=1e-4)
    assert calc.cagr(100, 200, 10) == approx(0.071773, abs=1e-6)
    assert calc.compound_amount(1000, 0.10, 2) == approx(1210)
    assert calc.simple_interest(1000, 0.05, 3) == approx(150)
    assert calc.real_rate(0.08, 0.03) == approx(0.048544, abs=1e-6)
    assert calc.zero_coupon_price(1000, 0.05, 10) == approx(613.91, abs=0.005)


def test_corporate_and_risk_textbook():
    assert calc.gordon_growth(2.0, 0.10, 0.05) == approx(40)
    assert calc.wacc(600, 400, 0.12, 0.06, 0.25) == approx(0.6 * 0.12 + 0.4 * 0.06 * 0.75)
    assert calc.breakeven_units(10_000, 50, 30) == approx(500)
    assert calc.payback_period(1000, [400, 400, 400]) == approx(2.5)
    assert calc.payback_period(1000, [100, 100]) == math.inf
    assert calc.parametric_var(1_000_000, 0.02, calc.Z_SCORES[0.99]) == approx(46_526.96, abs=0.01)
    assert calc.position_size(100_000, 0.01, 50, 48) == 500
    assert calc.position_size(10_000, 0.01, 10.0, 9.7) == 333  # rounds down
    assert calc.kelly_fraction(0.6, 1.0) == approx(0.2)
    assert calc.capm(0.03, 1.2, 0.08) == approx(0.09)
    assert calc.max_drawdown([100, 120, 90, 130, 65]) == approx(0.5)
    assert calc.current_yield(1000, 0.06, 950) == approx(60 / 950)


def test_z_scores_are_normal_quantiles():
    for conf, z in calc.Z_SCORES.items():
        assert z == approx(NormalDist().inv_cdf(conf), abs=1e-12)


# ---------------------------------------------------------------- independent formulas, random inputs


def test_bond_price_matches_closed_form_annuity():
    rng = random.Random(1)
    for _ in range(300):
        face, c, y = rng.choice([100, 1000]), rng.uniform(0, 0.12), rng.uniform(0.001, 0.15)
        t, f = rng.randint(1, 30), rng.choice([1, 2, 4])
        i, n = y / f, t * f
        closed = face * c / f * (1 - (1 + i) ** -n) / i + face * (1 + i) ** -n
        assert calc.bond_price(face, c, y, t, f) == approx(closed, rel=1e-10)
        assert calc.bond_ytm(closed, face, c, t, f) == approx(y, abs=1e-8)


def test_irr_zeroes_npv_and_npv_matches_numpy():
    rng = random.Random(2)
    for _ in range(200):
        cfs = [-rng.uniform(100, 10000)] + [rng.uniform(10, 5000) for _ in range(rng.randint(1, 8))]
        r = rng.uniform(0, 0.3)
        disc = np.power(1 + r, -np.arange(len(cfs)))
        assert calc.npv(r, cfs) == approx(float(np.dot(cfs, disc)), rel=1e-10, abs=1e-8)
        if sum(cfs) > 0:
            assert abs(calc.npv(calc.irr(cfs), cfs)) < 1e-6


def test_black_scholes_satisfies_put_call_parity_and_bounds():
    rng = random.Random(3)
    for _ in range(300):
        s, k = rng.uniform(10, 500), rng.uniform(10, 500)
        t, r, v = rng.uniform(0.05, 3), rng.uniform(0, 0.1), rng.uniform(0.05, 0.9)
        c, p = calc.black_scholes(s, k, t, r, v, "call"), calc.black_scholes(s, k, t, r, v, "put")
        assert c - p == approx(s - k * math.exp(-r * t), abs=1e-8)
        assert max(0.0, s - k * math.exp(-r * t)) - 1e-9 <= c <= s
        assert calc.put_from_parity(c, s, k, r, t) == approx(p, abs=1e-8)
        # Independent CDF: statistics.NormalDist instead of math.erf.
        d1 = (math.log(s / k) + (r + v * v / 2) * t) / (v * math.sqrt(t))
        n = NormalDist().cdf
        assert c == approx(s * n(d1) - k * math.exp(-r * t) * n(d1 - v * math.sqrt(t)), abs=1e-8)


def test_duration_matches_numerical_price_derivative():
    rng = random.Random(4)
    for _ in range(100):
        c, y, t = rng.uniform(0.01, 0.1), rng.uniform(0.01, 0.12), rng.randint(1, 30)
        h = 1e-6
        dp = (calc.bond_price(100, c, y + h, t) - calc.bond_price(100, c, y - h, t)) / (2 * h)
        assert calc.modified_duration(100, c, y, t) == approx(-dp / calc.bond_price(100, c, y, t), rel=1e-5)


def test_statistics_match_numpy():
    rng = random.Random(5)
    for _ in range(100):
        n = rng.randint(3, 30)
        a = [rng.gauss(0, 0.02) for _ in range(n)]
        m = [rng.gauss(0, 0.02) for _ in range(n)]
        assert calc.stdev(a) == approx(float(np.std(a, ddof=1)))
        assert calc.annualized_volatility(a) == approx(float(np.std(a, ddof=1) * np.sqrt(252)))
        assert calc.beta(a, m) == approx(float(np.cov(a, m, ddof=1)[0, 1] / np.var(m, ddof=1)))
        downside = np.sqrt(np.mean(np.minimum(np.asarray(a), 0.0) ** 2))
        if downside > 0:
            assert calc.sortino(a) == approx(float(np.mean(a) / downside))
        prices = np.cumprod(1 + np.asarray(a)) * 100
        dd = float(np.max(1 - prices / np.maximum.accumulate(prices)))
        assert calc.max_drawdown(list(prices)) == approx(dd, abs=1e-12)


def test_two_asset_volatility_matches_covariance_matrix():
    rng = random.Random(6)
    for _ in range(100):
        w1, s1, s2, rho = rng.uniform(0, 1), rng.uniform(0.01, 0.5), rng.uniform(0.01, 0.5), rng.uniform(-1, 1)
        w = np.array([w1, 1 - w1])
        cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
        assert calc.two_asset_volatility(w1, s1, s2, rho) == approx(float(np.sqrt(w @ cov @ w)))


def test_annuity_and_loan_identities():
    rng = random.Random(7)
    for _ in range(100):
        r, n, pmt = rng.uniform(0.001, 0.2), rng.randint(1, 40), rng.uniform(1, 1e5)
        # PV of an annuity is the sum of its discounted payments; FV is PV compounded.
        assert calc.annuity_pv(pmt, r, n) == approx(sum(pmt / (1 + r) ** k for k in range(1, n + 1)))
        assert calc.annuity_fv(pmt, r, n) == approx(calc.annuity_pv(pmt, r, n) * (1 + r) ** n)
        # A loan's payments, discounted at the loan rate, repay the principal.
        p = rng.uniform(1000, 1e6)
        years = rng.randint(1, 30)
        pay = calc.loan_payment(p, r, years)
        assert calc.annuity_pv(pay, r / 12, years * 12) == approx(p)


def test_forward_and_rates_identities():
    assert calc.forward_price(100, 0.05, 1) == approx(100 * math.e ** 0.05)
    rng = random.Random(8)
    for _ in range(50):
        nominal, infl = rng.uniform(0, 0.2), rng.uniform(0, 0.1)
        assert (1 + calc.real_rate(nominal, infl)) * (1 + infl) == approx(1 + nominal)
        b, e, t = rng.uniform(1, 1000), rng.uniform(1, 1000), rng.randint(1, 30)
        assert b * (1 + calc.cagr(b, e, t)) ** t == approx(e)
