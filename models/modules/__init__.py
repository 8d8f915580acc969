"""Pure torch modules of the CSL model: operators, decoders, likelihoods and the network that joins them."""
