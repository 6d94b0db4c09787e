"""`python -m learner.report`: the command's old name, kept for the README and scripts; it lives in lab.report."""
import sys

from lab.report import cli

if __name__ == "__main__":
    sys.exit(cli())
