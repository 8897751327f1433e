"""``python -m mammo.app``'s parts: what a dropped upload becomes (:mod:`.uploads`), the exam
predictions shown for it (:mod:`.exams`), the dataset browser (:mod:`.catalogue`), the readers'
reading room (:mod:`.reading_room`), and the Gradio page that puts them on screen (:mod:`.ui`).
Everything but :mod:`.ui` works without Gradio and is tested on its own."""
