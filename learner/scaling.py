"""`python -m learner.scaling`: the command's old name, kept for the README and scripts; it lives in lab.scaling."""
import sys

from lab.scaling import main as cli

if __name__ == "__main__":
    sys.exit(cli())
