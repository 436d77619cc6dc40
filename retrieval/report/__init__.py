"""HTML pages a person can look at: one per run, one for the leaderboard, and one comparing
two runs.

All are static files that open from disk in any browser, with no server and no network.
"""
from retrieval.report.compare_page import build_compare_page
from retrieval.report.leaderboard_page import build_leaderboard_page
from retrieval.report.run_page import build_run_report

__all__ = ["build_compare_page", "build_leaderboard_page", "build_run_report"]
