# Shared by the three spec files (exec'd into their namespace, where PyInstaller's
# Analysis, PYZ and EXE live). One-file, stripped executables; the version comes from
# common.__version__, which every program prints with --version.
import os

TOP = os.path.dirname(SPECPATH)  # noqa: F821 - defined by PyInstaller
ICON = os.path.join(SPECPATH, "linux", "icons", "shelf-256.png")  # noqa: F821
NO_GUI = ["tkinter", "_tkinter", "sv_ttk", "tkinterdnd2", "PIL", "gui"]


def build_program(name, entry, windowed=False, datas=(), hiddenimports=(), excludes=()):
    analysis = Analysis(  # noqa: F821
        [os.path.join(SPECPATH, "entry", entry)],  # noqa: F821
        pathex=[TOP], datas=list(datas), hiddenimports=list(hiddenimports),
        excludes=list(excludes) + ["pytest", "hypothesis", "setuptools", "pip"])
    archive = PYZ(analysis.pure)  # noqa: F821
    return EXE(  # noqa: F821
        archive, analysis.scripts, analysis.binaries, analysis.datas, [],
        name=name, strip=True, upx=False, console=not windowed, icon=ICON,
        runtime_tmpdir=None)
