"""``qpart reproduce``: run the experiments (:mod:`.run`), draw the figures (:mod:`.figures`)
and write the report (:mod:`.report`)."""
