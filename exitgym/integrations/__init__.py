"""Bridges to outside engines that run exitgym at scale (Ray RLlib and Tune).

Optional: these modules import their engine (``pip install "exitgym[ray]"``) when called, so the
package stays importable without it. Layered between ``bench`` and ``inference``: they may use
``experiments`` and everything below; only ``bench`` and ``cli`` import them.
"""
