# Set-up for Colab or any fresh environment: installs this book's package when it is missing
# and does nothing where it is installed. Training uses a GPU when there is one (on Colab:
# Runtime > Change runtime type > GPU).
import importlib
import os
import subprocess
import sys

try:
    import alexnet_tutorial  # noqa: F401
except ImportError:
    source = os.environ.get("ALEXNET_TUTORIAL_INSTALL_URL",  # set it to install from elsewhere, e.g. a clone
                            "git+https://github.com/alexnet-tutorial/alexnet-tutorial")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", source], check=True)
    importlib.invalidate_caches()
