"""Stand-in for the get-pip script ansible-test downloads (that host is unreachable offline).

ansible-test runs ``python get_pip.py <pip args>`` inside a fresh venv: bootstrap pip with ensurepip,
then install what was asked for, minus the flags only get-pip understands.
"""
import subprocess
import sys

DROP = {"--no-setuptools", "--no-wheel"}


def main():
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    args = [a for a in sys.argv[1:] if a not in DROP]
    if args:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args])


if __name__ == "__main__":
    main()
