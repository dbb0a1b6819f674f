"""The driver: resumable active-learning rounds (train → evaluate → score → select → label) in a run directory."""

from dal_dist.driver.config import RunConfig, load_config, parse_config
from dal_dist.driver.labels import import_labels
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.report import make_report
from dal_dist.driver.report_html import write_html_report
from dal_dist.driver.rounds import RunOutcome, run, with_device
from dal_dist.driver.state import RunState, load_run_state
from dal_dist.driver.status import run_status
from dal_dist.driver.strategies import STRATEGIES, Strategy

__all__ = ["LabelLedger", "RunConfig", "RunOutcome", "RunState", "STRATEGIES", "Strategy", "import_labels",
           "load_config", "load_run_state", "make_report", "parse_config", "run", "run_status", "with_device",
           "write_html_report"]
