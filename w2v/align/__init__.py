"""Forced alignment of long recordings to their text: CTC segmentation as in MMS (see ``ctc.py``)."""
