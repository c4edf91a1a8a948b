"""Config overrides that shrink the dependency configs (configs/dep/*.yaml) to seconds-long
test models, shared by the dependency test modules."""

DEP_TINY = [
    "model.encoder.word_dim=8",
    "model.encoder.char_dim=4",
    "model.encoder.char_filters=6",
    "model.encoder.lstm_hidden=6",
    "model.encoder.lstm_layers=1",
    "model.parser.arc_dim=8",
    "model.parser.rel_dim=4",
    "model.parser.sib_dim=4",
]
